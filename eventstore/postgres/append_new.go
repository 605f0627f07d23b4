package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// sqlAppendNew inserts the first events of many new streams in one
// statement. The unique (stream, stream_version) constraint is the
// NoStream check: a stream that already has events already has version 1.
const sqlAppendNew = `
INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, payload,
	correlation_id, causation_id, actor, occurred_at)
SELECT e.id, e.stream, e.ver, e.typ, e.sv, e.payload, e.corr, e.caus, e.actor, e.occ
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::json[], $7::text[], $8::text[],
	$9::text[], $10::timestamptz[]) WITH ORDINALITY AS e(id, stream, ver, typ, sv, payload, corr, caus, actor, occ, n)
ORDER BY e.n
RETURNING position`

// allNew reports whether every request creates its stream (NoStream) with
// events, each stream once: the importer's shape, one stream per mail.
func allNew(reqs []eventstore.AppendRequest) bool {
	if len(reqs) < 2 {
		return false
	}
	seen := make(map[string]bool, len(reqs))
	for _, r := range reqs {
		if r.ExpectedVersion != eventstore.NoStream || len(r.Events) == 0 || seen[r.Stream] {
			return false
		}
		seen[r.Stream] = true
	}
	return true
}

// appendNew appends to many new streams in one round trip and one
// statement, where appendAll runs one statement per stream: importing a
// batch of 500 mails is one insert instead of 500.
func appendNew(ctx context.Context, q querier, reqs []eventstore.AppendRequest) (eventstore.AppendResult, error) {
	n := 0
	for _, r := range reqs {
		n += len(r.Events)
	}
	var (
		ids      = make([]string, 0, n)
		streams  = make([]string, 0, n)
		vers     = make([]int64, 0, n)
		types    = make([]string, 0, n)
		schemas  = make([]int32, 0, n)
		payloads = make([]json.RawMessage, 0, n)
		corr     = make([]string, 0, n)
		caus     = make([]string, 0, n)
		actors   = make([]string, 0, n)
		occurred = make([]time.Time, 0, n)
	)
	res := eventstore.AppendResult{StreamVersions: make(map[string]int64, len(reqs))}
	for _, r := range reqs {
		for i, e := range r.Events {
			id := e.ID
			if id == "" {
				u, err := uuid.NewV7()
				if err != nil {
					return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append to %q: event id: %w", r.Stream, err)
				}
				id = u.String()
			}
			var payload json.RawMessage
			if len(e.Payload) > 0 {
				payload = e.Payload
			}
			ids, streams, vers = append(ids, id), append(streams, r.Stream), append(vers, int64(i+1))
			types, schemas = append(types, e.Type), append(schemas, int32(min(e.SchemaVersion, 1<<31-1)))
			payloads = append(payloads, payload)
			corr, caus, actors = append(corr, e.Metadata.CorrelationID), append(caus, e.Metadata.CausationID), append(actors, e.Metadata.Actor)
			occurred = append(occurred, e.Metadata.OccurredAt)
		}
		res.StreamVersions[r.Stream] = int64(len(r.Events))
	}
	rows, err := q.Query(ctx, sqlAppendNew, ids, streams, vers, types, schemas, payloads, corr, caus, actors, occurred)
	if err != nil {
		return eventstore.AppendResult{}, mapAppendError(err, conflicting(err, reqs))
	}
	defer rows.Close()
	for rows.Next() {
		var pos int64
		if err := rows.Scan(&pos); err != nil {
			return eventstore.AppendResult{}, fmt.Errorf("eventstore/postgres: append %d new streams: %w", len(reqs), err)
		}
		res.LastPosition = max(res.LastPosition, pos)
	}
	if err := rows.Err(); err != nil {
		return eventstore.AppendResult{}, mapAppendError(err, conflicting(err, reqs))
	}
	return res, nil
}

// conflicting names the request whose stream the database reports in a
// unique violation ("Key (stream, stream_version)=(s, 1) already exists."),
// so the conflict error names the right stream; else the first request.
func conflicting(err error, reqs []eventstore.AppendRequest) eventstore.AppendRequest {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		for _, r := range reqs {
			if strings.Contains(pgErr.Detail, "("+r.Stream+", ") {
				return r
			}
		}
	}
	return reqs[0]
}
