package sqlite

import (
	"database/sql"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Entry data of at least minCompress bytes is stored S2-compressed (data_codec 's2')
// when that saves an eighth of it or more: a 64 KiB JSON body written to the WAL and
// checkpointed into the database is most of what a large exchange costs, in system
// calls and pages. Smaller data fits a page or two anyway, and data that does not
// compress (random or already compressed bytes) is stored as it is, so reading it costs
// nothing.
const minCompress = 2 << 10

// codecS2 is data_codec of a compressed entry.
const codecS2 = "s2"

// maxUnpacked bounds what a compressed entry may decode to. Data this large or larger is
// stored as it is, so no entry the store wrote decodes to more; a row that claims more
// was altered, and is read as stored (verification reports it) instead of making every
// read of it allocate what a few tampered bytes claim (an S2 block's header can claim
// 4 GiB).
const maxUnpacked = 256 << 20

// scratch holds the buffers entries are compressed into: the driver copies a bound
// value, so a buffer is free again once its statement has run.
var scratch = sync.Pool{New: func() any { return new([]byte) }}

// packed is an entry's data as the entries table stores it.
type packed struct {
	data  []byte
	codec sql.NullString
	buf   *[]byte // from scratch, when data is in it
}

// pack returns data as it is to be stored. release returns its buffer.
func pack(data []byte) packed {
	if len(data) < minCompress || len(data) >= maxUnpacked {
		return packed{data: data}
	}
	buf := scratch.Get().(*[]byte)
	if n := s2.MaxEncodedLen(len(data)); cap(*buf) < n {
		*buf = make([]byte, n)
	}
	out := s2.Encode((*buf)[:cap(*buf)], data)
	if len(out) > len(data)-len(data)/8 {
		scratch.Put(buf)
		return packed{data: data}
	}
	return packed{data: out, codec: sql.NullString{String: codecS2, Valid: true}, buf: buf}
}

// release gives p's buffer back; p's data must not be used after.
func (p packed) release() {
	if p.buf != nil {
		scratch.Put(p.buf)
	}
}

// unpack returns the data of an entry stored as stored with codec. Data that does not
// decompress, or claims to decode to maxUnpacked or more, is returned as it is stored: verification then reports the entry as
// altered, which it is, instead of every read of the store failing on it.
func unpack(stored []byte, codec sql.NullString) []byte {
	if !codec.Valid || codec.String != codecS2 {
		return stored
	}
	if n, err := s2.DecodedLen(stored); err != nil || n >= maxUnpacked {
		return stored
	}
	out, err := s2.Decode(nil, stored)
	if err != nil {
		return stored
	}
	return out
}
