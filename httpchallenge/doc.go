// Package httpchallenge publishes the files of HTTP file DCV: for an http or
// https validation the CA fetches
// http(s)://<name>/.well-known/pki-validation/<file> once, follows no
// redirect, and compares the body with the content it gave. The input is a
// reseller.FileInstruction, already validated by package reseller; the file
// name and path are checked again here, because a mistake would write
// outside a web root.
//
// There are two ways to serve a file, and one way to prove it is served:
//
//   - Write puts the file into one or more document roots (Webroot) of an
//     existing web server, for a name served by several backends, all of
//     them or none. It goes through os.Root so that no name and no symlink
//     can make it write elsewhere, sets modes 0755 and 0644 whatever the
//     umask (the web server is usually another user), and optionally an
//     owner and group. It returns Written records, which the caller persists
//     and gives to Remove once the validation is over, also after a restart:
//     Remove deletes exactly what was written, if still unchanged, and the
//     directories Write created once nothing but their marker is left in
//     them: Write leaves a private .dcvd-created file in a
//     pki-validation directory it created, so that whichever order that
//     shares the web root ends last removes them, and a directory an admin
//     made (no marker) is never removed.
//   - Responder serves files from memory as an http.Handler, for admins who
//     proxy /.well-known/pki-validation/ to dcvd's own listener; Standalone
//     runs a Responder on a listener of its own ("0.0.0.0:80") that is open
//     only while a file is pending, for hosts with no web server at all.
//   - Checker fetches the URL as the CA will, optionally connecting to
//     another address than the name's, and says what was served when it is
//     not the file. The CA is asked to validate only once the check passes:
//     a CA that finds nothing caches that for minutes.
//
// The package depends on package reseller only. Its one piece of state is a
// lock per web root, so that writes and removals in one web root of one
// process take turns.
package httpchallenge
