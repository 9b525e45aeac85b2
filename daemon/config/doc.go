// Package config reads dcvd's TOML configuration — the main file and the
// fragments it includes — into a [Config], and checks it: every problem
// is a [ConfigError] naming its file and key, all of them reported at
// once, and secrets (KEY, KEY_file, KEY_env, read through package
// internal/section as package providers and package notify read theirs)
// never appear in a message.
//
// [LoadConfig] checks what the file alone can tell; [Config.Check] also
// checks the host (state directory, web roots, deploy directories, reload
// commands), and the daemon runs the same host checks for one
// certificate before each paid reissue ([HostChecks]).
package config
