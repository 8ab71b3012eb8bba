//go:build !unix

package testaddr

// reserve reserves nothing where flock is missing: ports are then unique per
// test binary only.
func reserve(int) bool { return true }
