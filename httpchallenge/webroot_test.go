package httpchallenge

import (
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dcvd/dcvd/reseller"
)

const (
	testHost    = "shop.example.com"
	testName    = "310DCBBF4CCE62F762A2AAA148D556BD.txt"
	testContent = "698d51a19d8a121ce581499d7b70166820221122\n20221122\ncomodoca.com"
)

// instr returns a file instruction as reseller.ValidateInstructions builds
// them.
func instr(name, content string) reseller.FileInstruction {
	return reseller.FileInstruction{
		Scheme:   "http",
		Host:     testHost,
		Path:     reseller.PKIValidationPath + name,
		FileName: name,
		Content:  content,
		URL:      "http://" + testHost + reseller.PKIValidationPath + name,
	}
}

// tree lists everything below dir, relative, sorted; symlinks are listed,
// not followed.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func isRoot() bool { return os.Geteuid() == 0 }

func permOf(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// pkiPath returns where Write puts name in webroot.
func pkiPath(webroot, name string) string {
	return filepath.Join(webroot, ".well-known", "pki-validation", name)
}

// Not parallel: the umask is the process's.
func TestWriteModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	tests := []struct {
		name        string
		existing    []string // directories present before, relative
		wantCreated []string
	}{
		{"fresh webroot", nil, []string{pkiDir, wellKnownDir}},
		{".well-known exists", []string{".well-known"}, []string{pkiDir}},
		{"both exist", []string{".well-known/pki-validation"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, d := range tt.existing {
				mkdirs(t, filepath.Join(dir, d))
			}
			ws, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
			if err != nil {
				t.Fatal(err)
			}
			want := []Written{{Webroot: dir, Name: testName, Content: testContent, CreatedDirs: tt.wantCreated}}
			if !reflect.DeepEqual(ws, want) {
				t.Errorf("Written = %+v, want %+v", ws, want)
			}
			for _, d := range tt.wantCreated {
				fi, err := os.Stat(filepath.Join(dir, d))
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != 0o755 {
					t.Errorf("%s: mode %v, want 0755", d, got)
				}
			}
			p := pkiPath(dir, testName)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode(); got != 0o644 {
				t.Errorf("file mode %v, want -rw-r--r--", got)
			}
			if got := readFile(t, p); got != testContent {
				t.Errorf("content %q, want %q", got, testContent)
			}
			// No temporary file is left behind; a created pki-validation
			// is marked as dcvd's, privately.
			wantTree := []string{testName}
			if slices.Contains(tt.wantCreated, pkiDir) {
				wantTree = []string{CreatedMarker, testName}
				if got := permOf(t, filepath.Join(dir, markerPath)); got != 0o600 {
					t.Errorf("marker mode %v, want 0600", got)
				}
			}
			if got := tree(t, filepath.Join(dir, ".well-known", "pki-validation")); !reflect.DeepEqual(got, wantTree) {
				t.Errorf("pki-validation holds %q, want only %q", got, wantTree)
			}
		})
	}
}

func TestWriteRefusesSymlinksLeavingWebroot(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares webroot dir with outside directory out and
		// returns the link Write must name.
		setup func(t *testing.T, dir, out string) string
		// wantIn must appear in the error besides the link.
		wantIn []string
	}{
		{
			name: ".well-known absolute",
			setup: func(t *testing.T, dir, out string) string {
				symlink(t, out, filepath.Join(dir, ".well-known"))
				return filepath.Join(dir, ".well-known")
			},
			wantIn: []string{"is a symlink to " + "$OUT", "outside the webroot; refusing to write"},
		},
		{
			name: ".well-known relative",
			setup: func(t *testing.T, dir, out string) string {
				rel, err := filepath.Rel(dir, out)
				if err != nil {
					t.Fatal(err)
				}
				symlink(t, rel, filepath.Join(dir, ".well-known"))
				return filepath.Join(dir, ".well-known")
			},
			wantIn: []string{"$OUT", "outside the webroot"},
		},
		{
			name: ".well-known through an inside link that leaves",
			setup: func(t *testing.T, dir, out string) string {
				symlink(t, out, filepath.Join(dir, "hop"))
				symlink(t, "hop", filepath.Join(dir, ".well-known"))
				return filepath.Join(dir, ".well-known")
			},
			wantIn: []string{"$OUT", "outside the webroot"},
		},
		{
			name: "pki-validation",
			setup: func(t *testing.T, dir, out string) string {
				mkdirs(t, filepath.Join(dir, ".well-known"))
				symlink(t, out, filepath.Join(dir, ".well-known", "pki-validation"))
				return filepath.Join(dir, ".well-known", "pki-validation")
			},
			wantIn: []string{"$OUT", "outside the webroot"},
		},
		{
			name: "file name",
			setup: func(t *testing.T, dir, out string) string {
				mkdirs(t, filepath.Join(dir, ".well-known", "pki-validation"))
				symlink(t, filepath.Join(out, "x.txt"), pkiPath(dir, testName))
				return pkiPath(dir, testName)
			},
			wantIn: []string{"$OUT", "outside the webroot"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, bad, out := t.TempDir(), t.TempDir(), t.TempDir()
			link := tt.setup(t, bad, out)
			before := tree(t, bad)

			// The good webroot comes first: nothing may be written there
			// either.
			_, err := Write([]Webroot{{Dir: good}, {Dir: bad}}, instr(testName, testContent))
			if err == nil {
				t.Fatal("Write succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, link+" is a") {
				t.Errorf("error %q does not name the link %s", msg, link)
			}
			for _, w := range tt.wantIn {
				if w = strings.ReplaceAll(w, "$OUT", out); !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if got := tree(t, out); len(got) != 0 {
				t.Errorf("written outside the webroot: %q", got)
			}
			if got := tree(t, good); len(got) != 0 {
				t.Errorf("written into the other webroot: %q", got)
			}
			if got := tree(t, bad); !reflect.DeepEqual(got, before) {
				t.Errorf("webroot changed: %q, was %q", got, before)
			}
		})
	}
}

func TestWriteSymlinksInsideWebroot(t *testing.T) {
	t.Run("relative .well-known is followed", func(t *testing.T) {
		dir := t.TempDir()
		mkdirs(t, filepath.Join(dir, "shared", "wk"))
		symlink(t, "shared/wk", filepath.Join(dir, ".well-known"))
		ws, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
		if err != nil {
			t.Fatal(err)
		}
		real := filepath.Join(dir, "shared", "wk", "pki-validation", testName)
		if got := readFile(t, real); got != testContent {
			t.Errorf("content %q", got)
		}
		if want := []string{pkiDir}; !reflect.DeepEqual(ws[0].CreatedDirs, want) {
			t.Errorf("CreatedDirs %q, want %q", ws[0].CreatedDirs, want)
		}
		if err := Remove(ws); err != nil {
			t.Fatal(err)
		}
		want := []string{".well-known", "shared", "shared/wk"}
		if got := tree(t, dir); !reflect.DeepEqual(got, want) {
			t.Errorf("after Remove: %q, want %q", got, want)
		}
	})
	t.Run("relative pki-validation is followed", func(t *testing.T) {
		dir := t.TempDir()
		mkdirs(t, filepath.Join(dir, ".well-known"), filepath.Join(dir, "tokens"))
		symlink(t, "../tokens", filepath.Join(dir, ".well-known", "pki-validation"))
		if _, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent)); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, "tokens", testName)); got != testContent {
			t.Errorf("content %q", got)
		}
	})
	t.Run("symlink at the file name is replaced, not written through", func(t *testing.T) {
		dir := t.TempDir()
		mkdirs(t, filepath.Join(dir, ".well-known", "pki-validation"))
		writeFile(t, filepath.Join(dir, "index.html"), "home")
		symlink(t, "../../index.html", pkiPath(dir, testName))
		if _, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(pkiPath(dir, testName))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			t.Errorf("file is %v, want a regular file", fi.Mode())
		}
		if got := readFile(t, filepath.Join(dir, "index.html")); got != "home" {
			t.Errorf("link target overwritten: %q", got)
		}
	})
	t.Run("absolute link inside is refused with a reason", func(t *testing.T) {
		dir := t.TempDir()
		mkdirs(t, filepath.Join(dir, "shared"))
		symlink(t, filepath.Join(dir, "shared"), filepath.Join(dir, ".well-known"))
		_, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
		if err == nil || !strings.Contains(err.Error(), "absolute symlink") || !strings.Contains(err.Error(), "make it relative") {
			t.Fatalf("err = %v, want an absolute-symlink refusal", err)
		}
		if got := tree(t, filepath.Join(dir, "shared")); len(got) != 0 {
			t.Errorf("written: %q", got)
		}
	})
	t.Run("dangling link is refused", func(t *testing.T) {
		dir := t.TempDir()
		symlink(t, "missing", filepath.Join(dir, ".well-known"))
		_, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("err = %v, want a dangling-link refusal", err)
		}
	})
}

func TestWriteSeveralWebroots(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	mkdirs(t, filepath.Join(dirs[1], ".well-known"))
	var wrs []Webroot
	for _, d := range dirs {
		wrs = append(wrs, Webroot{Dir: d})
	}
	wrs = append(wrs, Webroot{Dir: dirs[0] + "/"}) // the same root again
	ws, err := Write(wrs, instr(testName, testContent))
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != len(dirs) {
		t.Fatalf("%d records, want %d: %+v", len(ws), len(dirs), ws)
	}
	for i, d := range dirs {
		if ws[i].Webroot != d {
			t.Errorf("record %d is for %s, want %s", i, ws[i].Webroot, d)
		}
		if got := readFile(t, pkiPath(d, testName)); got != testContent {
			t.Errorf("%s: content %q", d, got)
		}
	}
	if want := []string{pkiDir}; !reflect.DeepEqual(ws[1].CreatedDirs, want) {
		t.Errorf("CreatedDirs of the root with .well-known: %q, want %q", ws[1].CreatedDirs, want)
	}
}

// A failure while writing the second webroot removes what the first got.
func TestWriteAllOrNone(t *testing.T) {
	tests := []struct {
		name string
		// setup breaks the second webroot, or returns a reason to skip.
		setup func(t *testing.T, second string) []Webroot
	}{
		{
			name: "file where a directory belongs",
			setup: func(t *testing.T, second string) []Webroot {
				writeFile(t, filepath.Join(second, ".well-known"), "not a dir")
				return []Webroot{{Dir: second}}
			},
		},
		{
			name: "read-only webroot",
			setup: func(t *testing.T, second string) []Webroot {
				if isRoot() {
					t.Skip("root ignores directory permissions")
				}
				if err := os.Chmod(second, 0o555); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Chmod(second, 0o755) })
				return []Webroot{{Dir: second}}
			},
		},
		{
			name: "owner that cannot be set",
			setup: func(t *testing.T, second string) []Webroot {
				if isRoot() {
					t.Skip("root may give files to any owner")
				}
				// Giving a file to root takes privileges.
				return []Webroot{{Dir: second, Owner: "0"}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := t.TempDir(), t.TempDir()
			mkdirs(t, filepath.Join(first, ".well-known"))
			writeFile(t, filepath.Join(first, ".well-known", "security.txt"), "keep")
			wrs := append([]Webroot{{Dir: first}}, tt.setup(t, second)...)
			_, err := Write(wrs, instr(testName, testContent))
			if err == nil {
				t.Fatal("Write succeeded")
			}
			if !strings.Contains(err.Error(), second) {
				t.Errorf("error %q does not name the failing webroot %s", err, second)
			}
			if got, want := tree(t, first), []string{".well-known", ".well-known/security.txt"}; !reflect.DeepEqual(got, want) {
				t.Errorf("first webroot holds %q, want %q", got, want)
			}
		})
	}

	// Whatever the privileges: a failure in the write phase itself (here
	// a closed root) undoes the webroots already written.
	t.Run("write phase failure", func(t *testing.T) {
		first, second := t.TempDir(), t.TempDir()
		f := instr(testName, testContent)
		t1, err := prepare(Webroot{Dir: first}, f.FileName)
		if err != nil {
			t.Fatal(err)
		}
		defer t1.root.Close()
		t2, err := prepare(Webroot{Dir: second}, f.FileName)
		if err != nil {
			t.Fatal(err)
		}
		t2.root.Close()
		if _, err := writeAll([]*target{t1, t2}, f); err == nil {
			t.Fatal("writeAll succeeded with a closed root")
		}
		if got := tree(t, first); len(got) != 0 {
			t.Errorf("first webroot holds %q after the undo", got)
		}
	})
}

func TestWriteRefusesBadInput(t *testing.T) {
	good := instr(testName, testContent)
	tests := []struct {
		name    string
		f       reseller.FileInstruction
		wr      func(dir string) Webroot
		wantErr string
	}{
		{name: "climbing name", f: instr("../x", testContent), wantErr: `".."`},
		{name: "name with slash", f: instr("a/b", testContent), wantErr: `contains '/'`},
		{name: "hidden name", f: instr(".x", testContent), wantErr: "must begin"},
		{name: "empty name", f: instr("", testContent), wantErr: "empty"},
		{name: "dots inside", f: instr("a..txt", testContent), wantErr: `".."`},
		{name: "too long", f: instr(strings.Repeat("a", 256), testContent), wantErr: "longer than 255"},
		{name: "backslash", f: instr(`a\b`, testContent), wantErr: "only letters"},
		{name: "path not the pki path", f: func() reseller.FileInstruction {
			f := good
			f.Path = "/x/" + testName
			return f
		}(), wantErr: "path"},
		{name: "path with the wrong name", f: func() reseller.FileInstruction {
			f := good
			f.Path = reseller.PKIValidationPath + "other.txt"
			return f
		}(), wantErr: "path"},
		{name: "empty content", f: instr(testName, ""), wantErr: "content"},
		{name: "content too long", f: instr(testName, strings.Repeat("a", reseller.MaxDCVFileContentLen+1)), wantErr: "content"},
		{name: "relative webroot", f: good, wr: func(string) Webroot { return Webroot{Dir: "www"} }, wantErr: "not an absolute path"},
		{name: "missing webroot", f: good, wr: func(dir string) Webroot { return Webroot{Dir: filepath.Join(dir, "nope")} }, wantErr: "nope"},
		{name: "webroot is a file", f: good, wr: func(dir string) Webroot {
			p := filepath.Join(dir, "file")
			os.WriteFile(p, nil, 0o644)
			return Webroot{Dir: p}
		}, wantErr: "file"},
		{name: "unknown owner", f: good, wr: func(dir string) Webroot { return Webroot{Dir: dir, Owner: "no-such-user-dcvd"} }, wantErr: `owner "no-such-user-dcvd"`},
		{name: "unknown group", f: good, wr: func(dir string) Webroot { return Webroot{Dir: dir, Group: "no-such-group-dcvd"} }, wantErr: `group "no-such-group-dcvd"`},
		{name: "negative uid", f: good, wr: func(dir string) Webroot { return Webroot{Dir: dir, Owner: "-1"} }, wantErr: `owner "-1"`},
		{name: "directory at the file name", f: good, wr: func(dir string) Webroot {
			os.MkdirAll(pkiPath(dir, testName), 0o755)
			return Webroot{Dir: dir}
		}, wantErr: "is a directory"},
		{name: "file at pki-validation", f: good, wr: func(dir string) Webroot {
			os.MkdirAll(filepath.Join(dir, ".well-known"), 0o755)
			os.WriteFile(filepath.Join(dir, ".well-known", "pki-validation"), nil, 0o644)
			return Webroot{Dir: dir}
		}, wantErr: "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			wr := Webroot{Dir: dir}
			if tt.wr != nil {
				wr = tt.wr(dir)
			}
			before := tree(t, dir)
			_, err := Write([]Webroot{wr}, tt.f)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if wr.Dir == dir && (strings.Contains(tt.wantErr, "owner") || strings.Contains(tt.wantErr, "group")) && !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the webroot", err)
			}
			if got := tree(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("disk touched: %q, was %q", got, before)
			}
		})
	}
	if _, err := Write(nil, good); err == nil {
		t.Error("Write with no webroot succeeded")
	}
}

func TestWriteIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	first, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
	if err != nil {
		t.Fatal(err)
	}
	if len(again[0].CreatedDirs) != 0 {
		t.Errorf("second Write claims to have created %q", again[0].CreatedDirs)
	}
	// A new order for the same CSR: same name, new content.
	if _, err := Write([]Webroot{{Dir: dir}}, instr(testName, "new")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, pkiPath(dir, testName)); got != "new" {
		t.Errorf("content %q, want the new one", got)
	}
	// The first order's cleanup leaves the new file alone.
	if err := Remove(first); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, pkiPath(dir, testName)); got != "new" {
		t.Errorf("content %q after the old cleanup, want the new one", got)
	}
}

func TestWriteOwner(t *testing.T) {
	if !isRoot() {
		// Without privileges only one's own ids can be given.
		uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
		dir := t.TempDir()
		if _, err := Write([]Webroot{{Dir: dir, Owner: uid, Group: gid}}, instr(testName, testContent)); err != nil {
			t.Fatal(err)
		}
		checkOwner(t, pkiPath(dir, testName), os.Getuid(), os.Getgid())
		return
	}
	nobody, nogroup := "nobody", "nogroup"
	if _, err := user.Lookup(nobody); err != nil {
		nobody = ""
	}
	if _, err := user.LookupGroup(nogroup); err != nil {
		nogroup = ""
	}
	tests := []struct {
		name         string
		owner, group string
		uid, gid     int
	}{
		{"numeric owner and group", "65534", "65534", 65534, 65534},
		{"numeric owner only", "65534", "", 65534, os.Getgid()},
		{"numeric group only", "", "65534", os.Getuid(), 65534},
		{"names", nobody, nogroup, 65534, 65534},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "names" && (nobody == "" || nogroup == "") {
				t.Skip("no nobody/nogroup in the user database")
			}
			if tt.name == "names" {
				u, _ := user.Lookup(nobody)
				g, _ := user.LookupGroup(nogroup)
				tt.uid, _ = strconv.Atoi(u.Uid)
				tt.gid, _ = strconv.Atoi(g.Gid)
			}
			dir := t.TempDir()
			mkdirs(t, filepath.Join(dir, ".well-known"))
			if _, err := Write([]Webroot{{Dir: dir, Owner: tt.owner, Group: tt.group}}, instr(testName, testContent)); err != nil {
				t.Fatal(err)
			}
			checkOwner(t, pkiPath(dir, testName), tt.uid, tt.gid)
			checkOwner(t, filepath.Join(dir, ".well-known", "pki-validation"), tt.uid, tt.gid)
			// A directory that existed keeps its owner.
			checkOwner(t, filepath.Join(dir, ".well-known"), os.Getuid(), os.Getgid())
		})
	}
}

func checkOwner(t *testing.T, path string, uid, gid int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
	}
}
