package main

// DefaultConfigPath is where dcvd looks for its configuration.
const DefaultConfigPath = "/etc/dcvd/config.toml"
