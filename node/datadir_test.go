package node

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirMode: a data directory the node creates is its owner's alone (it holds every event
// of the node's replicas, in files Pebble creates readable by all), its missing parents are
// created as mkdir -p creates them, and a directory that exists keeps the mode its operator gave.
func TestDataDirMode(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "srv", "shoal")
	d, err := openDataDir(dir, "n1", "host")
	if err != nil {
		t.Fatal(err)
	}
	defer d.unlock()
	snaps, err := d.resetSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, snaps: 0o700, filepath.Join(dir, lockFile): 0o600} {
		if fi, err := os.Stat(path); err != nil {
			t.Fatal(err)
		} else if got := fi.Mode().Perm(); got&0o077 != 0 || got&want != want {
			t.Errorf("%s: mode %v, want %v", path, got, os.FileMode(want))
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "srv")); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o005 == 0 {
		t.Errorf("parent %s: mode %v, want it traversable as mkdir -p makes it", fi.Name(), fi.Mode().Perm())
	}

	shared := filepath.Join(root, "shared")
	if err := os.Mkdir(shared, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o750); err != nil { // whatever the umask
		t.Fatal(err)
	}
	d2, err := openDataDir(shared, "n2", "host")
	if err != nil {
		t.Fatal(err)
	}
	defer d2.unlock()
	if fi, err := os.Stat(shared); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o750 {
		t.Errorf("existing directory's mode changed to %v, want 0750 kept", fi.Mode().Perm())
	}
}
