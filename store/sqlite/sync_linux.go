package sqlite

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and the metadata needed to read it back (its size), to
// disk.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// preallocate allocates n bytes of f's blocks from off without changing its size.
func preallocate(f *os.File, off, n int64) error {
	const keepSize = 0x1 // FALLOC_FL_KEEP_SIZE
	return syscall.Fallocate(int(f.Fd()), keepSize, off, n)
}
