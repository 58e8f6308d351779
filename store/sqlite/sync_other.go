//go:build !linux

package sqlite

import (
	"errors"
	"os"
)

// fdatasync flushes f to disk.
func fdatasync(f *os.File) error { return f.Sync() }

// preallocate does nothing here: writes allocate their own blocks.
func preallocate(f *os.File, off, n int64) error { return errors.ErrUnsupported }
