package projections

import (
	"context"
	"encoding/binary"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// binaryRows are rows that encode themselves in PostgreSQL's binary COPY
// format (https://www.postgresql.org/docs/current/sql-copy.html), which
// spares the large tables of a rebuild an interface value per column and
// pgx's per-value encoding. The column types are those of tableDDL.
type binaryRows interface {
	rowSource
	// appendBinary appends row i as one tuple.
	appendBinary(b []byte, i int) []byte
}

// copyBinary writes rows into table with COPY ... FROM STDIN (FORMAT binary).
func copyBinary(ctx context.Context, pool *pgxpool.Pool, table string, columns []string, rows binaryRows) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = pgx.Identifier{c}.Sanitize()
	}
	_, err = conn.Conn().PgConn().CopyFrom(ctx, &copyReader{rows: rows},
		`COPY `+pgx.Identifier{table}.Sanitize()+` (`+strings.Join(cols, ", ")+`) FROM STDIN (FORMAT binary)`)
	return err
}

// copyReader encodes rows as the COPY data stream while it is read.
type copyReader struct {
	rows    binaryRows
	next    int
	buf     []byte
	off     int
	started bool
	done    bool
}

// copyChunk is how much a copyReader encodes ahead.
const copyChunk = 64 << 10

func (c *copyReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.done {
			return 0, io.EOF
		}
		c.buf, c.off = c.buf[:0], 0
		if !c.started {
			c.started = true
			c.buf = append(c.buf, "PGCOPY\n\xff\r\n\x00"...)
			c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // flags
			c.buf = binary.BigEndian.AppendUint32(c.buf, 0) // header extension
		}
		for c.next < c.rows.len() && len(c.buf) < copyChunk {
			c.buf = c.rows.appendBinary(c.buf, c.next)
			c.next++
		}
		if c.next == c.rows.len() {
			c.buf = binary.BigEndian.AppendUint16(c.buf, 0xFFFF) // trailer
			c.done = true
		}
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

func appendText(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendInt8(b []byte, v int64) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// pgEpochMicros is PostgreSQL's zero time, 2000-01-01 UTC, in Unix
// microseconds.
const pgEpochMicros = 946_684_800_000_000

// appendTimestamptz encodes t as pgx does: microseconds since 2000-01-01,
// the nanoseconds truncated.
func appendTimestamptz(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint32(b, 8)
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixMicro()-pgEpochMicros))
}
