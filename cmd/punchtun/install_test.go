package main

import (
	"archive/zip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoInstallLatest installs punchtun the way the README tells users to,
// `go install github.com/punchtun/punchtun/cmd/punchtun@latest`, from a
// module proxy in a directory that serves this checkout as v0.1.0, ahead
// of the real proxy for the dependencies. It fails on what breaks the
// command for users: a replace directive in go.mod, a file the build needs
// that git does not track, a dependency missing from go.sum.
func TestGoInstallLatest(t *testing.T) {
	t.Parallel()
	const module, version = "github.com/punchtun/punchtun", "v0.1.0"
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tracked, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout (git ls-files: %v): nothing to publish", err)
	}
	proxy := t.TempDir()
	dir := filepath.Join(proxy, module, "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"list":            version + "\n",
		version + ".info": fmt.Sprintf(`{"Version":%q,"Time":"2026-11-23T00:00:00Z"}`, version),
		version + ".mod":  string(goMod),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeModuleZip(t, filepath.Join(dir, version+".zip"), module+"@"+version, root, strings.Split(strings.TrimRight(string(tracked), "\x00"), "\x00"))

	// The dependencies come from the module cache's own download
	// directory, which is laid out as a proxy, into a module cache of the
	// test's: nothing is fetched, and nothing of v0.1.0 stays behind. With
	// no checksum database, go.sum alone vouches for them: an entry
	// missing there fails the install.
	modCache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	downloads := filepath.Join(strings.TrimSpace(string(modCache)), "cache", "download")
	bin := t.TempDir()
	// A compile of the whole module, beside the lab tests: at the lowest
	// priority, where there is nice, it takes only the CPU they leave.
	args := []string{"go", "install", module + "/cmd/punchtun@latest"}
	if nice, err := exec.LookPath("nice"); err == nil {
		args = append([]string{nice, "-n", "19"}, args...)
	}
	install := exec.Command(args[0], args[1:]...)
	install.Dir = t.TempDir() // outside this module: as a user would
	install.Env = append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(downloads),
		"GOSUMDB=off", "GOMODCACHE="+t.TempDir(), "GOFLAGS=-modcacherw", "GOBIN="+bin)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install %s/cmd/punchtun@latest: %v\n%s", module, err, out)
	}
	out, err := exec.Command(filepath.Join(bin, "punchtun"), "help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "punchtun up") {
		t.Fatalf("the installed punchtun: %v\n%s", err, out)
	}
}

// writeModuleZip writes a module zip (the files under prefix/) of files,
// paths relative to root.
func writeModuleZip(t *testing.T, name, prefix, root string, files []string) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z := zip.NewWriter(f)
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if os.IsNotExist(err) {
			continue // deleted in the working tree, not yet in git
		}
		if err != nil {
			t.Fatal(err)
		}
		w, err := z.Create(prefix + "/" + rel)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
}
