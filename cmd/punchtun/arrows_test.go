package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tunnelRooms are the packages under tunnel/ that do the work, each a
// concern of its own: they meet only through the plain values and
// interfaces of the packages below them (tunnel/link, tunnel/transport,
// tunnel/config, tunnel/registration, tunnel/turnrelay, tunnel/policy), and the root package tunnel
// wires them together.
var tunnelRooms = []string{"tunnel/bind", "tunnel/control", "tunnel/osnet", "tunnel/names", "tunnel/tundev"}

// TestPackageArrows keeps the package graph pointing one way: the protocol
// (rendezvous/wire, with keys, state files and token buckets) is what both
// sides share; nat depends on nothing of this module; the peer (tunnel)
// never imports the rendezvous server, and the rendezvous never imports
// the peer. Under tunnel/, nothing imports the root, no room imports
// another room, and the packages below the rooms import none of them.
func TestPackageArrows(t *testing.T) {
	const mod = "github.com/punchtun/punchtun/"
	out, err := exec.Command("go", "list", "-test", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	roomOf := func(p string) string { // the room p is, or is under; "" for none
		for _, r := range tunnelRooms {
			if under(p, r) {
				return r
			}
		}
		return ""
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		// A package built with its tests is listed as "p [p.test]", its
		// external tests as "p_test [p.test]": their arrows count as the
		// package's, but for the rendezvous a peer's test may run (to
		// check it against the real server).
		pkg := strings.TrimPrefix(fields[0], mod)
		pkg = strings.TrimSuffix(strings.TrimSuffix(pkg, ".test"), "_test")
		test := strings.Contains(line, ".test]") || strings.HasSuffix(fields[0], ".test")
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			imp = strings.TrimPrefix(imp, mod)
			if imp == pkg || strings.HasPrefix(imp, "[") {
				continue
			}
			switch {
			case under(pkg, "nat"):
				t.Errorf("nat imports %s: it must depend on nothing of this module", imp)
			case under(pkg, "tunnel") && imp == "rendezvous" && !test:
				t.Errorf("%s imports the rendezvous server", pkg)
			case under(pkg, "rendezvous") && under(imp, "tunnel"):
				t.Errorf("%s imports the peer's %s", pkg, imp)
			case under(pkg, "tunnel/") && imp == "tunnel":
				t.Errorf("%s imports the root package tunnel: the root imports its children, never the other way", pkg)
			case roomOf(pkg) != "" && roomOf(imp) != "" && roomOf(pkg) != roomOf(imp):
				t.Errorf("%s imports %s: rooms meet through tunnel/link and the other packages below them, not each other", pkg, imp)
			case under(pkg, "tunnel/") && roomOf(pkg) == "" && roomOf(imp) != "":
				t.Errorf("%s, below the rooms, imports %s", pkg, imp)
			}
		}
	}
}

// TestRooms keeps the code's rooms small enough to find one's way in: no
// type anywhere in the module has its methods spread over more than
// five files (a _linux/_other pair counts once), code files stay
// at or under 500 lines and test files at or under 650, the root package
// tunnel has at most a dozen code files, and every package says in its
// comment what it is for.
func TestRooms(t *testing.T) {
	fset := token.NewFileSet()
	methods := map[string]map[string]bool{} // package dir and type → files
	documented := map[string]bool{}         // package dir → has a package comment
	rootFiles := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel("../..", path)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines := strings.Count(string(src), "\n")
		isTest := strings.HasSuffix(path, "_test.go")
		if limit := map[bool]int{false: 500, true: 650}[isTest]; lines > limit {
			t.Errorf("%s: %d lines, over %d: split it by concern", rel, lines, limit)
		}
		if isTest {
			return nil
		}
		dir := filepath.Dir(rel)
		if dir == "tunnel" {
			rootFiles++
		}
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		documented[dir] = documented[dir] || f.Doc != nil
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Recv == nil {
				continue
			}
			recv := fd.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			if ix, ok := recv.(*ast.IndexExpr); ok {
				recv = ix.X
			}
			typ := dir + "." + recv.(*ast.Ident).Name
			if methods[typ] == nil {
				methods[typ] = map[string]bool{}
			}
			base := strings.TrimSuffix(filepath.Base(rel), ".go")
			for _, platform := range []string{"_linux", "_other", "_unix", "_windows"} {
				base = strings.TrimSuffix(base, platform)
			}
			methods[typ][base] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, files := range methods {
		if len(files) > 5 {
			names := slices.Sorted(func(yield func(string) bool) {
				for f := range files {
					if !yield(f) {
						return
					}
				}
			})
			t.Errorf("%s has methods in %d files (%s): at most 5", typ, len(files), strings.Join(names, ", "))
		}
	}
	if rootFiles > 12 {
		t.Errorf("the root package tunnel has %d code files, over 12: it only wires its children together", rootFiles)
	}
	for dir, ok := range documented {
		if !ok {
			t.Errorf("package %s has no package comment saying what it is for", dir)
		}
	}
}
