package tunnel

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestListenPrivate: the status socket is made in a directory only its
// owner can enter (made so, or changed to it) and is its owner's alone; a
// directory others may write to is refused.
func TestListenPrivate(t *testing.T) {
	if _, err := listenPrivate(filepath.Join(os.TempDir(), "pt0.sock")); err == nil {
		t.Fatal("listened in a world-writable directory")
	}
	dir := filepath.Join(t.TempDir(), "run")
	os.Mkdir(dir, 0o755)
	path := filepath.Join(dir, "pt0.sock")
	l, err := listenPrivate(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s: %v %v, want a socket of mode 0600", path, fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("run directory mode %v, want 0700", di.Mode())
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
}
