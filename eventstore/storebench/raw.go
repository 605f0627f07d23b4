package storebench

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// raw writes rows of the events table's shape into raw_events, a copy of
// it with the same columns, defaults (pg_current_xact_id(), now()) and
// indexes, with nothing but pgx: the baselines.
type raw struct {
	pool *pgxpool.Pool
	// multi caches the multi-row INSERT text by row count.
	multi map[int]string
}

var rawColumns = []string{"event_id", "stream", "stream_version", "event_type", "schema_version", "payload",
	"correlation_id", "causation_id", "actor", "occurred_at"}

func newRaw(ctx context.Context, pool *pgxpool.Pool) (*raw, error) {
	if _, err := pool.Exec(ctx, `CREATE TABLE raw_events (LIKE events INCLUDING ALL)`); err != nil {
		return nil, fmt.Errorf("storebench: create raw_events: %w", err)
	}
	return &raw{pool: pool, multi: map[int]string{}}, nil
}

// rowArgs is the row of sequence number seq, the i-th of its stream.
func rowArgs(seq, streamStart, i int) []any {
	e := newEvent(seq)
	return []any{fmt.Sprintf("raw-%d", seq), fmt.Sprintf("raw-%d", streamStart), int64(i + 1), e.Type, int32(e.SchemaVersion),
		[]byte(e.Payload), e.Metadata.CorrelationID, e.Metadata.CausationID, e.Metadata.Actor, e.Metadata.OccurredAt}
}

const sqlInsertOne = `INSERT INTO raw_events (event_id, stream, stream_version, event_type, schema_version, payload,
	correlation_id, causation_id, actor, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// insertSingle commits every row on its own (autocommit INSERT).
func (r *raw) insertSingle(ctx context.Context, seq, n, _ int) error {
	for i := range n {
		if _, err := r.pool.Exec(ctx, sqlInsertOne, rowArgs(seq+i, seq+i, 0)...); err != nil {
			return err
		}
	}
	return nil
}

func (r *raw) multiRowSQL(rows int) string {
	if q, ok := r.multi[rows]; ok {
		return q
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO raw_events (` + strings.Join(rawColumns, ", ") + `) VALUES `)
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for c := range rawColumns {
			if c > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d", i*len(rawColumns)+c+1)
		}
		b.WriteString(")")
	}
	r.multi[rows] = b.String()
	return r.multi[rows]
}

// inTxs runs fn for each transaction's worth of rows.
func (r *raw) inTxs(ctx context.Context, seq, n, perTx int, fn func(tx pgx.Tx, start, k int) error) error {
	for off := 0; off < n; off += perTx {
		k := min(perTx, n-off)
		err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error { return fn(tx, seq+off, k) })
		if err != nil {
			return err
		}
	}
	return nil
}

// insertMultiRow inserts perTx rows per transaction with one multi-row
// INSERT ... VALUES.
func (r *raw) insertMultiRow(ctx context.Context, seq, n, perTx int) error {
	return r.inTxs(ctx, seq, n, perTx, func(tx pgx.Tx, start, k int) error {
		args := make([]any, 0, k*len(rawColumns))
		for i := range k {
			args = append(args, rowArgs(start+i, start, i)...)
		}
		_, err := tx.Exec(ctx, r.multiRowSQL(k), args...)
		return err
	})
}

// insertPgxBatch inserts perTx rows per transaction as single-row INSERTs
// pipelined in one pgx.Batch.
func (r *raw) insertPgxBatch(ctx context.Context, seq, n, perTx int) error {
	return r.inTxs(ctx, seq, n, perTx, func(tx pgx.Tx, start, k int) error {
		b := &pgx.Batch{}
		for i := range k {
			b.Queue(sqlInsertOne, rowArgs(start+i, start, i)...)
		}
		return tx.SendBatch(ctx, b).Close()
	})
}

// copyRows writes perTx rows per transaction with COPY FROM STDIN (binary).
func (r *raw) copyRows(ctx context.Context, seq, n, perTx int) error {
	return r.inTxs(ctx, seq, n, perTx, func(tx pgx.Tx, start, k int) error {
		rows := make([][]any, k)
		for i := range rows {
			rows[i] = rowArgs(start+i, start, i)
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"raw_events"}, rawColumns, pgx.CopyFromRows(rows))
		return err
	})
}
