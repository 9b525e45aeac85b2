module github.com/dcvd/dcvd

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/libdns/libdns v1.1.1
	github.com/miekg/dns v1.1.73
	go.uber.org/zap v1.28.0
	golang.org/x/net v0.62.0
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
