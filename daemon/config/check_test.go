package config

// The tests of this file are those of Config.Check and of what LoadConfig
// refuses because it would fail only once a reissue is paid for.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/testfs"
	"github.com/dcvd/dcvd/internal/testpki"
)

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, testRootPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	badRoots := filepath.Join(dir, "bad-roots.pem")
	if err := os.WriteFile(badRoots, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	good := &Config{
		API:    APIConfig{CARootsFile: roots},
		Daemon: DaemonConfig{StateDir: mk("state")},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: mk("www")}},
			// Missing but creatable: Check must not leave it behind.
			Deploy: deploy.Spec{Dir: filepath.Join(dir, "deploy", "a")},
		}},
	}
	if errs := good.Check(); len(errs) != 0 {
		t.Errorf("Check: %v", errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "deploy")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check left the deploy directory behind: %v", err)
	}
	if pool, err := good.API.CARoots(); err != nil || pool == nil {
		t.Errorf("CARoots: %v", err)
	}
	if pool, err := (APIConfig{}).CARoots(); err != nil || pool != nil {
		t.Errorf("CARoots without a file: %v, %v", pool, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".dcvd-check") {
			t.Errorf("probe file %s left behind", e.Name())
		}
	}

	bad := &Config{
		API:    APIConfig{CARootsFile: badRoots},
		Daemon: DaemonConfig{StateDir: filepath.Join(file, "state")},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: filepath.Join(dir, "nowhere"), Owner: "no-such-user-dcvd"}, {Dir: file}},
			Deploy:   deploy.Spec{Dir: file, Group: "no-such-group-dcvd"},
		}, {
			Name:   "b",
			Deploy: deploy.Spec{Dir: filepath.Join(file, "sub", "dir"), Owner: "0", Group: "0"},
		}},
	}
	// The deploy directories are also in certificate a's web root (a
	// file, here): reported for both.
	want := []string{
		"api.ca_roots_file",
		"certificate[a].deploy",
		"certificate[a].deploy.dir",
		"certificate[a].deploy.dir",
		"certificate[a].webroot",
		"certificate[a].webroot",
		"certificate[a].webroot_owner",
		"certificate[b].deploy.dir",
		"certificate[b].deploy.dir",
		"daemon.state_dir",
	}
	errs := bad.Check()
	var got []string
	for _, e := range errs {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *ConfigError", e)
		}
		got = append(got, ce.Key)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Check keys %q\nwant %q\nerrors: %v", got, want, errs)
	}
	text := fmt.Sprint(errs)
	for _, w := range []string{"not a directory", "no-such-user-dcvd", "no-such-group-dcvd", "nowhere"} {
		if !strings.Contains(text, w) {
			t.Errorf("Check errors do not mention %q: %v", w, errs)
		}
	}
}

// testRootPEM is a self-signed CA certificate.
func testRootPEM(t *testing.T) []byte {
	t.Helper()
	now := time.Now()
	return []byte(testpki.PEM(testpki.SelfSigned(t, testpki.Key(t), "dcvd test root", now.Add(-time.Hour), now.Add(time.Hour))))
}

// TestConfigRefusesWhatFailsAfterPayment: setups that check-config used to
// pass and that failed only once a reissue was paid for (or exposed the
// private key) are refused by LoadConfig, each naming its key.
func TestConfigRefusesWhatFailsAfterPayment(t *testing.T) {
	second := func(lines ...string) string {
		return testBaseConfig + "\n[[certificate]]\nname = \"two\"\nservice_id = \"s2\"\n" + strings.Join(lines, "\n") +
			"\n[certificate.domains]\n\"two.example.com\" = \"http\"\n[certificate.deploy]\n"
	}
	tests := []struct {
		name string
		text string
		// want is the one error, as a "KEY: reason" prefix, and mention a
		// part of its reason.
		want, mention string
	}{
		{"deploy.dir /", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/"`),
			`certificate[shop].deploy.dir: / is a directory of the system`, "/etc/ssl/dcvd/NAME"},
		{"deploy.dir /etc", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/etc/"`),
			`certificate[shop].deploy.dir: /etc is a directory of the system`, "privkey.pem"},
		{"deploy.dir /etc/ssl/private", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/etc/ssl/private"`),
			`certificate[shop].deploy.dir: /etc/ssl/private is a directory of the system`, ""},
		{"deploy.dir /usr/local", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/usr/local"`),
			`certificate[shop].deploy.dir: /usr/local is a directory of the system`, ""},
		{"deploy.dir /srv", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/srv"`),
			`certificate[shop].deploy.dir: /srv is a directory of the system`, "/srv/dcvd/NAME"},
		{"deploy.dir /home", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/home"`),
			`certificate[shop].deploy.dir: /home is a directory of the system`, ""},
		{"deploy.dir under /proc", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/proc/self/certs"`),
			`certificate[shop].deploy.dir: /proc/self/certs is on a kernel file system`, ""},
		{"deploy.dir in the runtime directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/run/dcvd/shop"`),
			`certificate[shop].deploy.dir: /run/dcvd/shop is in dcvd's runtime directory`, "empties"},
		{"deploy.dir is the state directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/lib/dcvd"`),
			`certificate[shop].deploy.dir: /var/lib/dcvd is daemon.state_dir`, ""},
		{"deploy.dir in the key directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/lib/dcvd/keys/shop"`),
			`certificate[shop].deploy.dir: /var/lib/dcvd/keys/shop is inside daemon.state_dir/keys`, ""},
		{"deploy.dir in its web root", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/www/shop/ssl"`),
			`certificate[shop].deploy.dir: /var/www/shop/ssl is inside the web root /var/www/shop of certificate[shop]`, "privkey.pem"},
		{"deploy.dir is its web root", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/www/shop/"`),
			`certificate[shop].deploy.dir: /var/www/shop is inside the web root /var/www/shop of certificate[shop]`, ""},
		{"deploy.dir in another certificate's web root", second(`webroot = "/srv/www/two"`) + `dir = "/var/www/shop/.certs/two"` + "\n",
			`certificate[two].deploy.dir: /var/www/shop/.certs/two is inside the web root /var/www/shop of certificate[shop]`, ""},
		{"deploy.dir in a web root nested in another", second(`webroot = "/var/www"`) + `dir = "/var/www/shop/.certs/two"` + "\n",
			`certificate[two].deploy.dir: /var/www/shop/.certs/two is inside the web root /var/www/shop of certificate[shop]`, ""},
		{"key_mode with group write", edit("#DEPLOY", `key_mode = "0660"`),
			`certificate[shop].deploy.key_mode: 0660 lets the file's group change the private key`, `"0640"`},
		{"key_mode with other bits", edit("#DEPLOY", `key_mode = "0602"`),
			`certificate[shop].deploy.key_mode: 0602 lets every user of the host read or change the private key`, ""},
		{"mode writable by everyone", edit("#DEPLOY", `mode = "0666"`),
			`certificate[shop].deploy.mode: 0666 lets every user of the host replace the certificate files`, ""},
		{"TSIG secret not base64", edit(`key_file = "/etc/dcvd/tsig.key"`, `key_file = "/etc/dcvd/tsig-bad.key"`),
			`dns.main.key_file: the TSIG secret is not base64`, ""},
		{"webhook URL with a space", edit("#DEPLOY", "[notify.ops]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/dcvd alerts\""),
			`notify.ops.url: contains a space or a control character`, "%20"},
		{"webhook URL with a tab", edit("#DEPLOY", "[notify.ops]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/dcvd\\talerts\""),
			`notify.ops.url: contains a space or a control character`, ""},
		{"robot URL not absolute", edit("#DEPLOY", "[notify.bot]\ntype = \"wecom\"\nurl = \"qyapi.weixin.qq.com/cgi-bin/webhook/send\"\nkey = \"k\""),
			`notify.bot.url: must be an absolute http:// or https:// URL`, ""},
		{"callback_url with a space", edit("#DAEMON", "callback_listen = \"127.0.0.1:8089\"\ncallback_url = \"https://dcvd.example.com/call back\""),
			`daemon.callback_url: contains a space or a control character`, ""},
		{"base_url without a host name", edit(`base_url = "https://api.example.net/api/v1"`, `base_url = "https://:443/api/v1"`),
			`api.base_url: "https://:443/api/v1" has no host`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := load(t, tt.text)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg)
			}
			errorKeys(t, err) // every error is a *ConfigError
			got := strings.Split(err.Error(), "\n")
			if len(got) != 1 || !strings.HasPrefix(got[0], tt.want) || !strings.Contains(got[0], tt.mention) {
				t.Errorf("error:\n%s\nwant one, starting %q and mentioning %q", err, tt.want, tt.mention)
			}
			for _, secret := range []string{testSecret, "secret secret", "c2VjcmV0c2VjcmV0c2VjcmV0"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes a secret: %v", err)
				}
			}
		})
	}
}

// TestConfigCheckHost: setups of the host that make an order fail after
// the reissue is paid for, or expose the keys, are reported by Check (and
// so by the pre-flight check, which shares the code), each naming its key.
func TestConfigCheckHost(t *testing.T) {
	root := os.Geteuid() == 0
	tests := []struct {
		name string
		// setup changes a good configuration and its directories.
		setup func(t *testing.T, c *Config, w *hostWorld)
		// key and mention are what one of Check's errors must hold.
		key, mention string
		// readOnly, when set, runs Check with this directory read-only.
		readOnly func(w *hostWorld) string
	}{
		{name: "read-only web root", readOnly: func(w *hostWorld) string { return w.webroot },
			key: "certificate[a].webroot", mention: "dcvd cannot create .well-known in"},
		{name: "read-only pki-validation", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, ".well-known", "pki-validation"))
		}, readOnly: func(w *hostWorld) string { return filepath.Join(w.webroot, ".well-known", "pki-validation") },
			key: "certificate[a].webroot", mention: "dcvd cannot create files in"},
		{name: ".well-known symlink leaving the web root", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Symlink(t, w.outside, filepath.Join(w.webroot, ".well-known"))
		}, key: "certificate[a].webroot", mention: "outside the webroot"},
		{name: "pki-validation symlink leaving the web root", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, ".well-known"))
			testfs.Symlink(t, w.outside, filepath.Join(w.webroot, ".well-known", "pki-validation"))
		}, key: "certificate[a].webroot", mention: "outside the webroot"},
		{name: "unknown webroot_owner", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Webroots[0].Owner = "no-such-user-dcvd"
		}, key: "certificate[a].webroot_owner", mention: "no-such-user-dcvd"},
		{name: "deploy.dir in a web root through a symlink", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, "certs"))
			link := filepath.Join(w.base, "certs")
			testfs.Symlink(t, filepath.Join(w.webroot, "certs"), link)
			c.Certificates[0].Deploy.Dir = filepath.Join(link, "a")
		}, key: "certificate[a].deploy.dir", mention: "the web server would serve privkey.pem"},
		{name: "deploy.dir in another certificate's web root through a symlink", setup: func(t *testing.T, c *Config, w *hostWorld) {
			other := filepath.Join(w.base, "other-www")
			testfs.MkdirAll(t, filepath.Join(other, "ssl"))
			c.Certificates = append(c.Certificates, CertConfig{Name: "b", Webroots: []httpchallenge.Webroot{{Dir: other}},
				Deploy: deploy.Spec{Dir: filepath.Join(w.base, "deploy-b")}})
			link := filepath.Join(w.base, "ssl-link")
			testfs.Symlink(t, filepath.Join(other, "ssl"), link)
			c.Certificates[0].Deploy.Dir = link
		}, key: "certificate[a].deploy.dir", mention: "of certificate[b] once symlinks are resolved"},
		{name: "deploy.dir a symlink to /etc", setup: func(t *testing.T, c *Config, w *hostWorld) {
			link := filepath.Join(w.base, "etc-link")
			testfs.Symlink(t, "/etc", link)
			c.Certificates[0].Deploy.Dir = link
		}, key: "certificate[a].deploy.dir", mention: "leads through symlinks to /etc, which is a directory of the system"},
		{name: "deploy.dir writable by everyone", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, c.Certificates[0].Deploy.Dir)
			testfs.Chmod(t, c.Certificates[0].Deploy.Dir, 0o777)
		}, key: "certificate[a].deploy.dir", mention: "writable by every user (mode 0777)"},
		{name: "state_dir writable by everyone", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Chmod(t, c.Daemon.StateDir, 0o777)
		}, key: "daemon.state_dir", mention: "writable by its group or by every user (mode 0777)"},
		{name: "state_dir writable by its group", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Chmod(t, c.Daemon.StateDir, 0o770)
		}, key: "daemon.state_dir", mention: "(mode 0770)"},
		{name: "keys open to the group", setup: func(t *testing.T, c *Config, w *hostWorld) {
			keys := filepath.Join(c.Daemon.StateDir, "keys")
			testfs.MkdirAll(t, keys)
			testfs.Chmod(t, keys, 0o750)
		}, key: "daemon.state_dir", mention: "keys is open to its group or to other users (mode 0750)"},
		{name: "keys owned by someone else", setup: func(t *testing.T, c *Config, w *hostWorld) {
			keys := filepath.Join(c.Daemon.StateDir, "keys")
			if !root {
				// Unprivileged, no directory can be given away: the
				// keys/ of this state directory is root's / instead.
				testfs.Symlink(t, "/", keys)
				return
			}
			testfs.MkdirAll(t, keys)
			if err := os.Chown(keys, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, key: "daemon.state_dir", mention: "is owned by uid"},
		{name: "reload program missing", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Deploy.Reload = "no-such-program-dcvd reload nginx"
		}, key: "certificate[a].deploy.reload", mention: `"no-such-program-dcvd" is not found in PATH`},
		{name: "reload program not executable", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Deploy.Reload = filepath.Join(w.base, "reload.sh") + " --now"
			if err := os.WriteFile(filepath.Join(w.base, "reload.sh"), []byte("#!/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, key: "certificate[a].deploy.reload", mention: "is not an executable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w := newHostWorld(t)
			if errs := c.Check(); len(errs) != 0 {
				t.Fatalf("the good setup: Check = %v", errs)
			}
			if tt.setup != nil {
				tt.setup(t, c, w)
			}
			check := func() error { return errors.Join(c.Check()...) }
			var err error
			if tt.readOnly != nil {
				err, _ = testfs.ReadOnly(t, tt.readOnly(w), check)
			} else {
				err = check()
			}
			for _, e := range cfgUnjoin(err) {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("%v is not a *ConfigError", e)
				}
				if ce.Key == tt.key && strings.Contains(ce.Reason, tt.mention) {
					return
				}
			}
			t.Errorf("Check = %v\nwant an error of %s mentioning %q", err, tt.key, tt.mention)
		})
	}
}

// hostWorld is the directories of TestConfigCheckHost's configuration.
type hostWorld struct {
	base, webroot, outside string
}

// newHostWorld returns a configuration of one certificate, "a", that
// passes Check, in a temporary directory.
func newHostWorld(t *testing.T) (*Config, *hostWorld) {
	t.Helper()
	base := t.TempDir()
	w := &hostWorld{base: base, webroot: filepath.Join(base, "www"), outside: filepath.Join(base, "outside")}
	testfs.MkdirAll(t, w.webroot)
	testfs.MkdirAll(t, w.outside)
	state := filepath.Join(base, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return &Config{
		Daemon: DaemonConfig{StateDir: state},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: w.webroot}},
			Deploy:   deploy.Spec{Dir: filepath.Join(base, "deploy", "a"), Reload: "true"},
		}},
	}, w
}
