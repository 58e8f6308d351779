package sqlite

import (
	"database/sql"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Entry data of at least minCompress bytes is stored zstd-compressed (data_codec
// 'zstd') when that saves an eighth of it or more: a 64 KiB JSON body written to the WAL
// and checkpointed into the database is most of what a large exchange costs, in system
// calls and pages. Smaller data fits a page or two anyway, and data that does not
// compress (random or already compressed bytes) is stored as it is, so reading it costs
// nothing.
const minCompress = 2 << 10

// probeLen is the sample of large data that is compressed first, to tell whether the
// rest is worth it.
const probeLen = 4 << 10

// codecZstd is data_codec of a compressed entry.
const codecZstd = "zstd"

var (
	// encoder compresses at zstd's fastest level: the store's one writer compresses
	// every large entry, and its time is on the path of strict mode's requests.
	encoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithZeroFrames(true))
		if err != nil {
			panic(err) // only for invalid options
		}
		return e
	})
	decoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic(err) // only for invalid options
		}
		return d
	})
	// scratch holds the buffers entries are compressed into: the driver copies a
	// bound value, so a buffer is free again once its statement has run.
	scratch = sync.Pool{New: func() any { return new([]byte) }}
)

// packed is an entry's data as the entries table stores it.
type packed struct {
	data  []byte
	codec sql.NullString
	buf   *[]byte // from scratch, when data is in it
}

// pack returns data as it is to be stored. release returns its buffer.
func pack(data []byte) packed {
	if len(data) < minCompress {
		return packed{data: data}
	}
	buf := scratch.Get().(*[]byte)
	if len(data) >= 4*probeLen {
		// Data that does not compress costs its whole compression for nothing: a sample
		// from its middle (past the headers, into the body) tells first.
		mid := data[len(data)/2:][:probeLen]
		if probe := encoder().EncodeAll(mid, (*buf)[:0]); len(probe) > probeLen-probeLen/8 {
			*buf = probe
			scratch.Put(buf)
			return packed{data: data}
		}
	}
	out := encoder().EncodeAll(data, (*buf)[:0])
	*buf = out
	if len(out) > len(data)-len(data)/8 {
		scratch.Put(buf)
		return packed{data: data}
	}
	return packed{data: out, codec: sql.NullString{String: codecZstd, Valid: true}, buf: buf}
}

// release gives p's buffer back; p's data must not be used after.
func (p packed) release() {
	if p.buf != nil {
		scratch.Put(p.buf)
	}
}

// unpack returns the data of an entry stored as stored with codec. Data that does not
// decompress is returned as it is stored: verification then reports the entry as
// altered, which it is, instead of every read of the store failing on it.
func unpack(stored []byte, codec sql.NullString) []byte {
	if !codec.Valid || codec.String != codecZstd {
		return stored
	}
	out, err := decoder().DecodeAll(stored, nil)
	if err != nil {
		return stored
	}
	return out
}
