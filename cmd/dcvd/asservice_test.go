package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serviceSetup is a host laid out for "check-config --as-service": a
// unit running as nobody with the shipped unit's sandbox, a state
// directory, web root and deploy parent nobody owns, and a secret file.
type serviceSetup struct {
	t                           *testing.T
	dir, state, www, deploy     string
	secret, unit, config, rules string
}

func newServiceSetup(t *testing.T) *serviceSetup {
	t.Helper()
	requireRoot(t)
	s := &serviceSetup{t: t, dir: t.TempDir()}
	openUp(t, s.dir)
	s.state, s.www, s.deploy = filepath.Join(s.dir, "state"), filepath.Join(s.dir, "www"), filepath.Join(s.dir, "deploy")
	chownNobody(t, 0o700, s.state)
	chownNobody(t, 0o755, s.www, s.deploy)
	etc := filepath.Join(s.dir, "etc")
	if err := os.Mkdir(etc, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(etc, 0, nobody); err != nil {
		t.Fatal(err)
	}
	s.secret = filepath.Join(etc, "api-secret")
	s.writeSecret(0o640)
	s.rules = t.TempDir()
	old := polkitRuleDirs
	polkitRuleDirs = []string{s.rules}
	t.Cleanup(func() { polkitRuleDirs = old })
	return s
}

// writeSecret writes the secret root:nobody with mode.
func (s *serviceSetup) writeSecret(mode os.FileMode) {
	s.t.Helper()
	if err := os.WriteFile(s.secret, []byte("s3cret\n"), mode); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(s.secret, mode); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chown(s.secret, 0, nobody); err != nil {
		s.t.Fatal(err)
	}
}

// writeUnit writes a unit like the shipped one, running as nobody, with
// extra [Service] lines.
func (s *serviceSetup) writeUnit(extra string) {
	s.t.Helper()
	unit := fmt.Sprintf(`[Service]
Type=notify
ExecStart=/usr/local/bin/dcvd run --config %s
User=nobody
Group=%d
ReadWritePaths=-%s
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
%s`, filepath.Join(s.dir, "config.toml"), nobody, s.state, extra)
	s.unit = filepath.Join(s.dir, "dcvd.service")
	if err := os.WriteFile(s.unit, []byte(unit), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// writeConfig writes one certificate validated by http; cert holds its
// extra keys (webroot or standalone, reload under [certificate.deploy]
// goes in deploy).
func (s *serviceSetup) writeConfig(secretFile, cert, deploy string) {
	s.t.Helper()
	cfg := fmt.Sprintf(`[api]
base_url = "http://127.0.0.1:1/api/v1"
access_key_id = "AK"
access_key_secret_file = %q

[daemon]
state_dir = %q

[[certificate]]
name = "shop"
service_id = "svc1"
%s
[certificate.domains]
"shop.example.com" = "http"

[certificate.deploy]
dir = %q
%s
`, secretFile, s.state, cert, filepath.Join(s.deploy, "shop"), deploy)
	s.config = filepath.Join(s.dir, "config.toml")
	if err := os.WriteFile(s.config, []byte(cfg), 0o640); err != nil {
		s.t.Fatal(err)
	}
}

func (s *serviceSetup) check() (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"check-config", "--as-service", "--unit", s.unit, "--config", s.config}, &out, &out)
	if err != nil {
		out.WriteString("error: " + err.Error())
	}
	return out.String(), err
}

func TestCheckAsServicePassesAGoodSetup(t *testing.T) {
	s := newServiceSetup(t)
	s.writeUnit("ReadWritePaths=" + s.www + " " + s.deploy + "\n")
	s.writeConfig(s.secret, fmt.Sprintf("webroot = %q", s.www), "")
	if out, err := s.check(); err != nil {
		t.Fatalf("a good setup fails:\n%s", out)
	}

	// The secret root's alone, handed over as a credential.
	s.writeSecret(0o600)
	s.writeUnit("ReadWritePaths=" + s.www + " " + s.deploy + "\nLoadCredential=api-secret:" + s.secret + "\n")
	s.writeConfig("${CREDENTIALS_DIRECTORY}/api-secret", fmt.Sprintf("webroot = %q", s.www), "")
	if out, err := s.check(); err != nil {
		t.Fatalf("a secret passed with LoadCredential= fails:\n%s", out)
	}

	// systemctl reload allowed by a polkit rule.
	rule := `polkit.addRule(function (action, subject) {
    if (action.id == "org.freedesktop.systemd1.manage-units" && subject.user == "nobody") { return polkit.Result.YES; }
});`
	if err := os.WriteFile(filepath.Join(s.rules, "50-dcvd.rules"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	s.writeConfig("${CREDENTIALS_DIRECTORY}/api-secret", fmt.Sprintf("webroot = %q", s.www), `reload = "systemctl reload nginx"`)
	if out, err := s.check(); err != nil {
		t.Fatalf("systemctl reload with a polkit rule fails:\n%s", out)
	}
}

func TestCheckAsServiceFindsEachProblem(t *testing.T) {
	rw := func(s *serviceSetup) string { return "ReadWritePaths=" + s.www + " " + s.deploy + "\n" }
	tests := []struct {
		name  string
		setup func(s *serviceSetup)
		key   string
		want  string
	}{
		{"port 80 without the capability", func(s *serviceSetup) {
			if unprivilegedPortStart() <= 80 {
				t.Skip("this host lets every user bind port 80 (net.ipv4.ip_unprivileged_port_start)")
			}
			s.writeUnit(rw(s))
			s.writeConfig(s.secret, `standalone = "0.0.0.0:80"`, "")
		}, "certificate[shop].standalone", "AmbientCapabilities=CAP_NET_BIND_SERVICE"},
		{"web root outside ReadWritePaths", func(s *serviceSetup) {
			s.writeUnit("ReadWritePaths=" + s.deploy + "\n")
			s.writeConfig(s.secret, fmt.Sprintf("webroot = %q", s.www), "")
		}, "certificate[shop].webroot", "ReadWritePaths=" + "WWW"},
		{"root-only secret file", func(s *serviceSetup) {
			s.writeSecret(0o600)
			s.writeUnit(rw(s))
			s.writeConfig(s.secret, fmt.Sprintf("webroot = %q", s.www), "")
		}, "api.access_key_secret_file", "LoadCredential=api-secret:"},
		{"credential the unit does not load", func(s *serviceSetup) {
			s.writeUnit(rw(s) + "LoadCredential=other:" + s.secret + "\n")
			s.writeConfig("${CREDENTIALS_DIRECTORY}/api-secret", fmt.Sprintf("webroot = %q", s.www), "")
		}, "api.access_key_secret_file", "add LoadCredential=api-secret:"},
		{"systemctl reload without the path unit", func(s *serviceSetup) {
			s.writeUnit(rw(s))
			s.writeConfig(s.secret, fmt.Sprintf("webroot = %q", s.www), `reload = "systemctl reload nginx"`)
		}, "certificate[shop].deploy.reload", "dcvd-reload-nginx.path"},
		{"sudo in the reload", func(s *serviceSetup) {
			s.writeUnit(rw(s))
			s.writeConfig(s.secret, fmt.Sprintf("webroot = %q", s.www), `reload = "sudo /bin/true"`)
		}, "certificate[shop].deploy.reload", "NoNewPrivileges"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServiceSetup(t)
			tt.setup(s)
			out, err := s.check()
			if err == nil {
				t.Fatalf("passed, want a problem of %s:\n%s", tt.key, out)
			}
			if code := exitCode(err); code != exitConfig {
				t.Errorf("exit status %d, want %d", code, exitConfig)
			}
			want := strings.ReplaceAll(tt.want, "WWW", s.www)
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, tt.key+": ") && strings.Contains(line, want) {
					t.Log(line)
					return
				}
			}
			t.Fatalf("no problem of %s saying %q:\n%s", tt.key, want, out)
		})
	}
}
