package httpchallenge

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/dcvd/dcvd/internal/testfs"
)

// snapshot lists everything below dir with its mode, so that a probe that
// leaves anything behind, or changes a mode, shows.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, rel := range tree(t, dir) {
		fi, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rel+" "+fi.Mode().String())
	}
	return out
}

func TestProbeLeavesNothingBehind(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, webroot string)
	}{
		{"empty webroot", func(t *testing.T, webroot string) {}},
		{".well-known only", func(t *testing.T, webroot string) {
			mkdirs(t, filepath.Join(webroot, ".well-known"))
		}},
		{"pki-validation with a file", func(t *testing.T, webroot string) {
			mkdirs(t, filepath.Join(webroot, ".well-known", "pki-validation"))
			writeFile(t, pkiPath(webroot, "OTHER.txt"), "someone else's")
		}},
		{".well-known a relative link inside", func(t *testing.T, webroot string) {
			mkdirs(t, filepath.Join(webroot, "shared", "wk", "pki-validation"))
			symlink(t, "shared/wk", filepath.Join(webroot, ".well-known"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			webroot := t.TempDir()
			tt.setup(t, webroot)
			before := snapshot(t, webroot)
			if err := Probe(Webroot{Dir: webroot}); err != nil {
				t.Fatalf("Probe: %v", err)
			}
			if after := snapshot(t, webroot); !slices.Equal(after, before) {
				t.Errorf("Probe changed the webroot:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// TestProbeRefusesLikeWrite: every webroot that Write refuses before
// writing, Probe refuses with the same message, and neither touches
// anything outside the webroot.
func TestProbeRefusesLikeWrite(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, webroot, outside string)
		want  string
	}{
		{".well-known absolute link outside", func(t *testing.T, webroot, outside string) {
			symlink(t, outside, filepath.Join(webroot, ".well-known"))
		}, "outside the webroot"},
		{".well-known relative link outside", func(t *testing.T, webroot, outside string) {
			rel, err := filepath.Rel(webroot, outside)
			if err != nil {
				t.Fatal(err)
			}
			symlink(t, rel, filepath.Join(webroot, ".well-known"))
		}, "outside the webroot"},
		{"pki-validation link outside", func(t *testing.T, webroot, outside string) {
			mkdirs(t, filepath.Join(webroot, ".well-known"))
			symlink(t, outside, filepath.Join(webroot, ".well-known", "pki-validation"))
		}, "outside the webroot"},
		{"absolute link inside", func(t *testing.T, webroot, outside string) {
			mkdirs(t, filepath.Join(webroot, "wk"))
			symlink(t, filepath.Join(webroot, "wk"), filepath.Join(webroot, ".well-known"))
		}, "absolute symlink"},
		{"dangling link", func(t *testing.T, webroot, outside string) {
			symlink(t, "nowhere", filepath.Join(webroot, ".well-known"))
		}, "does not exist"},
		{".well-known a file", func(t *testing.T, webroot, outside string) {
			writeFile(t, filepath.Join(webroot, ".well-known"), "x")
		}, "exists and is not a directory"},
		{"pki-validation a file", func(t *testing.T, webroot, outside string) {
			mkdirs(t, filepath.Join(webroot, ".well-known"))
			writeFile(t, filepath.Join(webroot, ".well-known", "pki-validation"), "x")
		}, "exists and is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			webroot, outside := t.TempDir(), t.TempDir()
			tt.setup(t, webroot, outside)
			before, outsideBefore := snapshot(t, webroot), snapshot(t, outside)
			err := Probe(Webroot{Dir: webroot})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Probe = %v, want an error saying %q", err, tt.want)
			}
			_, werr := Write([]Webroot{{Dir: webroot}}, instr(testName, testContent))
			if werr == nil || !strings.Contains(werr.Error(), err.Error()) {
				t.Errorf("Probe says %q, Write says %v: not the same refusal", err, werr)
			}
			if after := snapshot(t, webroot); !slices.Equal(after, before) {
				t.Errorf("the webroot changed: %q, was %q", after, before)
			}
			if after := snapshot(t, outside); !slices.Equal(after, outsideBefore) {
				t.Errorf("something was written outside the webroot: %q", after)
			}
		})
	}
}

func TestProbeBadWebroot(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "x")
	for _, tt := range []struct {
		name string
		wr   Webroot
		want []string
	}{
		{"missing", Webroot{Dir: filepath.Join(dir, "nowhere")}, []string{"nowhere", "no such file"}},
		{"a file", Webroot{Dir: file}, []string{"not a directory"}},
		{"relative", Webroot{Dir: "www"}, []string{"not an absolute path"}},
		{"unknown owner, missing too", Webroot{Dir: filepath.Join(dir, "nowhere"), Owner: "no-such-user-dcvd"},
			[]string{`owner "no-such-user-dcvd"`, "nowhere"}},
		{"unknown group", Webroot{Dir: dir, Group: "no-such-group-dcvd"}, []string{`group "no-such-group-dcvd"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Probe(tt.wr)
			if err == nil {
				t.Fatal("Probe accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Probe = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// TestProbeReadOnly: a webroot dcvd may not write to is refused, whether
// .well-known/pki-validation/ exists (Write would create a file in it) or
// not (Write would create the directories). Unprivileged, mode 0555 is
// enough; root ignores modes, so as root the webroot is made read-only the
// way systemd's ProtectSystem=strict does it: a read-only bind mount, in a
// mount namespace private to one thread.
func TestProbeReadOnly(t *testing.T) {
	for _, withDirs := range []bool{false, true} {
		name := "no .well-known"
		if withDirs {
			name = "with pki-validation"
		}
		t.Run(name, func(t *testing.T) {
			// The directory Write would write in is made read-only.
			webroot := t.TempDir()
			target := webroot
			if withDirs {
				target = filepath.Join(webroot, ".well-known", "pki-validation")
				mkdirs(t, target)
			}
			err, how := testfs.ReadOnly(t, target, func() error { return Probe(Webroot{Dir: webroot}) })
			t.Logf("made read-only by %s: %v", how, err)
			if err == nil {
				t.Fatalf("Probe accepted a read-only webroot (%s)", how)
			}
			if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EROFS) {
				t.Errorf("Probe = %v (%s), want it to wrap a permission or read-only error", err, how)
			}
			want := "dcvd cannot create .well-known in " + webroot
			if withDirs {
				want = "dcvd cannot create files in " + filepath.Join(webroot, ".well-known", "pki-validation")
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Probe = %v, want it to say %q", err, want)
			}
			if entries, _ := os.ReadDir(webroot); len(entries) > 0 && !withDirs {
				t.Errorf("Probe left %v in the webroot", entries)
			}
		})
	}
}

func TestProbeOwner(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root may give files away: the probe passes and leaves nothing.
		webroot := t.TempDir()
		if err := Probe(Webroot{Dir: webroot, Owner: "65534", Group: "65534"}); err != nil {
			t.Fatalf("Probe as root with an owner: %v", err)
		}
		if entries, _ := os.ReadDir(webroot); len(entries) > 0 {
			t.Errorf("Probe left %v in the webroot", entries)
		}
		return
	}
	// Unprivileged, dcvd cannot give what it writes to another user: Write
	// would fail after the reissue is paid for, Probe says so before.
	for _, withDirs := range []bool{false, true} {
		webroot := t.TempDir()
		if withDirs {
			mkdirs(t, filepath.Join(webroot, ".well-known", "pki-validation"))
		}
		before := snapshot(t, webroot)
		err := Probe(Webroot{Dir: webroot, Owner: "0"})
		if err == nil || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), `owner "0"`) {
			t.Errorf("Probe with owner 0 (dirs present: %t) = %v, want a permission error naming the owner", withDirs, err)
		}
		if after := snapshot(t, webroot); !slices.Equal(after, before) {
			t.Errorf("Probe left %q, was %q", after, before)
		}
	}
}
