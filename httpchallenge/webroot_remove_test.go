package httpchallenge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestRemove(t *testing.T) {
	other := "AAAA0000.txt"
	tests := []struct {
		name string
		// before prepares the webroot before Write.
		before func(t *testing.T, dir string)
		// after changes it between Write and Remove.
		after func(t *testing.T, dir string)
		want  []string // the webroot's tree after Remove
	}{
		{
			name: "fresh webroot is left empty",
			want: nil,
		},
		{
			name: "pre-existing .well-known and its files are kept",
			before: func(t *testing.T, dir string) {
				mkdirs(t, filepath.Join(dir, ".well-known"))
				writeFile(t, filepath.Join(dir, ".well-known", "security.txt"), "x")
			},
			want: []string{".well-known", ".well-known/security.txt"},
		},
		{
			name: "pre-existing pki-validation and another token are kept",
			before: func(t *testing.T, dir string) {
				mkdirs(t, filepath.Join(dir, ".well-known", "pki-validation"))
				writeFile(t, pkiPath(dir, other), "x")
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + other},
		},
		{
			name: "created directory that got another file is kept",
			after: func(t *testing.T, dir string) {
				writeFile(t, pkiPath(dir, other), "x")
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker, ".well-known/pki-validation/" + other},
		},
		{
			name: "file replaced with other content is kept",
			after: func(t *testing.T, dir string) {
				writeFile(t, pkiPath(dir, testName), "somebody else's")
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker, ".well-known/pki-validation/" + testName},
		},
		{
			name: "file replaced with other content of the same length is kept",
			after: func(t *testing.T, dir string) {
				writeFile(t, pkiPath(dir, testName), strings.ToUpper(testContent))
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker, ".well-known/pki-validation/" + testName},
		},
		{
			name: "file replaced with longer content of the same start is kept",
			after: func(t *testing.T, dir string) {
				writeFile(t, pkiPath(dir, testName), testContent+"x")
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker, ".well-known/pki-validation/" + testName},
		},
		{
			name: "file replaced by a symlink is kept",
			after: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "same.txt"), testContent)
				os.Remove(pkiPath(dir, testName))
				symlink(t, "../../same.txt", pkiPath(dir, testName))
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker, ".well-known/pki-validation/" + testName, "same.txt"},
		},
		{
			name: "created .well-known replaced by a symlink is kept",
			after: func(t *testing.T, dir string) {
				mkdirs(t, filepath.Join(dir, "shared"))
				os.RemoveAll(filepath.Join(dir, ".well-known"))
				symlink(t, "shared", filepath.Join(dir, ".well-known"))
			},
			want: []string{".well-known", "shared"},
		},
		{
			name: "file already gone",
			after: func(t *testing.T, dir string) {
				os.Remove(pkiPath(dir, testName))
			},
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.before != nil {
				tt.before(t, dir)
			}
			ws, err := Write([]Webroot{{Dir: dir}}, instr(testName, testContent))
			if err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(t, dir)
			}
			// As after a restart: the records come back from JSON.
			restored := jsonRoundTrip(t, ws)
			if !reflect.DeepEqual(restored, ws) {
				t.Fatalf("JSON round trip: %+v, want %+v", restored, ws)
			}
			removeTwice(t, dir, restored, tt.want, "")
		})
	}
}

// jsonRoundTrip is ws as it comes back from JSON.
func jsonRoundTrip(t *testing.T, ws []Written) []Written {
	t.Helper()
	b, err := json.Marshal(ws)
	if err != nil {
		t.Fatal(err)
	}
	var restored []Written
	if err := json.Unmarshal(b, &restored); err != nil {
		t.Fatal(err)
	}
	return restored
}

// removeTwice removes ws twice, as is safe to repeat, and checks that dir
// holds want after each. which follows "Remove #n" in failures.
func removeTwice(t *testing.T, dir string, ws []Written, want []string, which string) {
	t.Helper()
	for i := range 2 {
		if err := Remove(ws); err != nil {
			t.Fatalf("Remove #%d%s: %v", i+1, which, err)
		}
		if got := tree(t, dir); !reflect.DeepEqual(got, want) {
			t.Errorf("after Remove #%d%s: %q, want %q", i+1, which, got, want)
		}
	}
}

func TestRemoveSharedDirectories(t *testing.T) {
	dir := t.TempDir()
	var all []Written
	for _, name := range []string{"A.txt", "B.txt"} {
		ws, err := Write([]Webroot{{Dir: dir}}, instr(name, "token "+name))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ws...)
	}
	if len(all[1].CreatedDirs) != 0 {
		t.Fatalf("second file claims directories: %q", all[1].CreatedDirs)
	}
	// The file that created the directories comes first: they are
	// still removed, because files go before directories.
	if err := Remove(all); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, dir); len(got) != 0 {
		t.Errorf("left behind: %q", got)
	}
}

func TestRemoveRefusesTamperedRecords(t *testing.T) {
	dir := t.TempDir()
	mkdirs(t, filepath.Join(dir, "empty"), filepath.Join(dir, ".well-known"))
	writeFile(t, filepath.Join(dir, "index.html"), "home")
	before := tree(t, dir)
	tests := []struct {
		name    string
		w       Written
		wantErr string
	}{
		{"climbing name", Written{Webroot: dir, Name: "../../index.html", Content: "home"}, `".."`},
		{"name with slash", Written{Webroot: dir, Name: "a/b", Content: "home"}, "'/'"},
		{"no content", Written{Webroot: dir, Name: testName}, "no content"},
		{"relative webroot", Written{Webroot: "www", Name: testName, Content: "x"}, "not an absolute path"},
		{"foreign directory", Written{Webroot: dir, Name: testName, Content: "x", CreatedDirs: []string{"empty"}}, "not a directory dcvd creates"},
		{"climbing directory", Written{Webroot: dir, Name: testName, Content: "x", CreatedDirs: []string{"../x"}}, "not a directory dcvd creates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Remove([]Written{tt.w})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if got := tree(t, dir); !reflect.DeepEqual(got, before) {
				t.Errorf("disk changed: %q, was %q", got, before)
			}
		})
	}
	t.Run("missing webroot is not an error", func(t *testing.T) {
		w := Written{Webroot: filepath.Join(dir, "gone"), Name: testName, Content: "x", CreatedDirs: []string{pkiDir, wellKnownDir}}
		if err := Remove([]Written{w}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPrintable(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc.txt", "abc.txt"},
		{"", `""`},
		{"a b", `"a b"`},
		{"a\nb", `"a\nb"`},
		{strings.Repeat("x", 300), strings.Repeat("x", 200) + "…"},
		{"\xff", `"\xff"`},
	}
	for _, tt := range tests {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// A crash between writing the temporary file and renaming it leaves a
// .dcvd-*.tmp whose name was never recorded: Remove finds it by its
// content, and leaves another order's alone.
func TestRemoveDeletesAbandonedTemps(t *testing.T) {
	dir := t.TempDir()
	f := instr("ABC123.txt", "0123456789abcdef\ncomodoca.com\nxyz")
	ws, err := Write([]Webroot{{Dir: dir}}, f)
	if err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(dir, ".well-known", "pki-validation")
	mine := filepath.Join(pki, ".dcvd-00000000000000aa.tmp")
	theirs := filepath.Join(pki, ".dcvd-00000000000000bb.tmp")
	fresh := filepath.Join(pki, ".dcvd-00000000000000cc.tmp")
	other := filepath.Join(pki, "other.tmp")
	for path, content := range map[string]string{
		mine:   f.Content[:20],            // a write of f cut short
		theirs: "fedcba9876543210\nother", // another order's
		fresh:  "0",                       // too short to tell, and recent
		other:  f.Content[:20],            // not dcvd's name
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Remove(ws); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mine); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the abandoned temporary file of this order is still there: %v", err)
	}
	for _, p := range []string{theirs, fresh, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(p), err)
		}
	}
}

// Two certificates share a web root: whichever order writes first creates
// the directories, whichever ends first removes its file while the other's
// is still there. Once both are removed, nothing dcvd created is left, also
// when the records come back from JSON after a restart between the two;
// what the admin made before stays.
func TestRemoveSharedWebroot(t *testing.T) {
	a, b := instr("AAAA1111.txt", "token A"), instr("BBBB2222.txt", "token B")
	tests := []struct {
		name     string
		existing []string // directories the admin made, relative
		// after changes the web root between the writes and the removals.
		after func(t *testing.T, dir string)
		// firstEnds is the order removed first: "creator" (the order
		// whose Write made the directories) or "other".
		firstEnds string
		want      []string
	}{
		{name: "creator ends first", firstEnds: "creator"},
		{name: "other ends first", firstEnds: "other"},
		{name: "admin's .well-known, creator ends first", existing: []string{".well-known"}, firstEnds: "creator",
			want: []string{".well-known"}},
		{name: "admin's .well-known, other ends first", existing: []string{".well-known"}, firstEnds: "other",
			want: []string{".well-known"}},
		{name: "admin's pki-validation", existing: []string{".well-known/pki-validation"}, firstEnds: "creator",
			want: []string{".well-known", ".well-known/pki-validation"}},
		{
			// Written before dcvd kept the marker: the records name the
			// directories, the disk does not. The first removal, which
			// cannot remove them, marks them for the second.
			name: "records from before the marker", firstEnds: "creator",
			after: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, markerPath)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			// The creator's record is enough when it ends last.
			name: "records from before the marker, other ends first", firstEnds: "other",
			after: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, markerPath)); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "admin's file in the created directories", firstEnds: "creator",
			after: func(t *testing.T, dir string) {
				writeFile(t, pkiPath(dir, "admin.txt"), "mine")
			},
			want: []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker,
				".well-known/pki-validation/admin.txt"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, d := range tt.existing {
				mkdirs(t, filepath.Join(dir, d))
			}
			creator, err := Write([]Webroot{{Dir: dir}}, a)
			if err != nil {
				t.Fatal(err)
			}
			other, err := Write([]Webroot{{Dir: dir}}, b)
			if err != nil {
				t.Fatal(err)
			}
			if len(other[0].CreatedDirs) != 0 {
				t.Fatalf("the second write claims directories: %q", other[0].CreatedDirs)
			}
			if tt.after != nil {
				tt.after(t, dir)
			}
			first, second := creator, other
			if tt.firstEnds == "other" {
				first, second = other, creator
			}
			if err := Remove(first); err != nil {
				t.Fatal(err)
			}
			// The second order's file is still served.
			if got := readFile(t, pkiPath(dir, second[0].Name)); got != second[0].Content {
				t.Fatalf("the second order's file holds %q after the first removal", got)
			}
			// A restart: the second record comes back from JSON.
			removeTwice(t, dir, jsonRoundTrip(t, second), tt.want, " of the second")
		})
	}
}

// Orders write and remove their files in one web root at the same time, as
// the daemon's drivers do: no write fails, every file is served until its
// own removal, and nothing is left at the end.
func TestWriteRemoveConcurrently(t *testing.T) {
	dir := t.TempDir()
	const workers, rounds = 8, 25
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var err error
			defer func() { errs <- err }()
			for r := range rounds {
				f := instr("F"+strconv.Itoa(w)+"R"+strconv.Itoa(r)+".txt", "token "+strconv.Itoa(w*rounds+r))
				ws, werr := Write([]Webroot{{Dir: dir}}, f)
				if werr != nil {
					err = fmt.Errorf("write %s: %w", f.FileName, werr)
					return
				}
				if got, rerr := os.ReadFile(pkiPath(dir, f.FileName)); rerr != nil || string(got) != f.Content {
					err = fmt.Errorf("%s after its write: %q, %v", f.FileName, got, rerr)
					return
				}
				if rerr := Remove(ws); rerr != nil {
					err = fmt.Errorf("remove %s: %w", f.FileName, rerr)
					return
				}
			}
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := tree(t, dir); len(got) != 0 {
		t.Errorf("left behind: %q", got)
	}
}

// The marker is trusted only as a regular file, and never written through:
// a symlink at its name keeps an admin's directory, and the file it points
// to, as they are.
func TestMarkerNeverFollowed(t *testing.T) {
	dir := t.TempDir()
	mkdirs(t, filepath.Join(dir, ".well-known", "pki-validation"))
	writeFile(t, filepath.Join(dir, "index.html"), "home")
	symlink(t, "../../index.html", filepath.Join(dir, markerPath))
	f := instr(testName, testContent)
	ws, err := Write([]Webroot{{Dir: dir}}, f)
	if err != nil {
		t.Fatal(err)
	}
	// As if the directories had been recorded as created (a tampered
	// or stale record): the marker cannot be written, the directory is
	// not empty, and it stays.
	ws[0].CreatedDirs = []string{pkiDir}
	writeFile(t, pkiPath(dir, "other.txt"), "x")
	if err := Remove(ws); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "index.html")); got != "home" {
		t.Errorf("index.html, the link's target, holds %q", got)
	}
	want := []string{".well-known", ".well-known/pki-validation", ".well-known/pki-validation/" + CreatedMarker,
		".well-known/pki-validation/other.txt", "index.html"}
	if got := tree(t, dir); !reflect.DeepEqual(got, want) {
		t.Errorf("after Remove: %q, want %q", got, want)
	}
	if fi, err := os.Lstat(filepath.Join(dir, markerPath)); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the symlink at the marker's name was replaced: %v, %v", fi, err)
	}
}

func TestMarkerText(t *testing.T) {
	tests := []struct {
		dirs []string
		want []string // what readMarker reads back
	}{
		{[]string{pkiDir}, []string{pkiDir}},
		{[]string{pkiDir, wellKnownDir}, []string{pkiDir, wellKnownDir}},
		{[]string{wellKnownDir, pkiDir}, []string{pkiDir, wellKnownDir}},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		mkdirs(t, filepath.Join(dir, ".well-known", "pki-validation"))
		writeFile(t, filepath.Join(dir, markerPath), markerText(tt.dirs))
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readMarker(root)
		root.Close()
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("marker of %q reads back %q, %v; want %q", tt.dirs, got, err, tt.want)
		}
	}
}
