// Package statefile writes the small files punchtun keeps across restarts —
// a peer's --state-dir, the rendezvous's --state-file — so that a crash or
// a power cut at any moment leaves either the old file or the new one,
// never a torn one. It lives beside the protocol because both sides,
// which share nothing else but the protocol, use it.
package statefile

import (
	"os"
	"path/filepath"
)

// Write writes b to path atomically, readable by its owner only (mode
// 0600, in a directory created 0700 if missing): a temporary file in the
// same directory, flushed to disk, renamed over path, and the directory
// flushed so that the rename itself survives a power cut.
func Write(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
