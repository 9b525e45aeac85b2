// Package deploy puts a verified certificate where servers use it, makes
// them reload, and takes it back when the reload fails.
//
// A [Target] is one such place. [Deployer.Directory] is the first kind: a
// directory holding cert.pem, chain.pem, fullchain.pem and privkey.pem as
// certbot lays them out, replaced atomically with the replaced generation
// kept in previous/ for [Target.Rollback]. [Deploy] runs the whole
// sequence — install, reload, and on a failed reload restore and reload
// again — over any Target.
//
// The daemon's state machine, its cluster sync, status and redeploy see
// only Targets; adding a kind of target touches this package, the
// configuration that builds it and the documentation.
package deploy
