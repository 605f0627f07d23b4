package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/lease"
)

// instances wires what lets several serve processes share one PostgreSQL
// database (adapters/lease): the mailbox leases the fetch scheduler polls
// under, the claims' owner of the outbound saga, and the single-active
// parts. On the embedded store one process owns the database, so coord and
// exclusive stay nil and every lease is trivially local.
type instances struct {
	id        string
	coord     *lease.Coordinator
	exclusive *lease.Exclusive
	pool      *pgxpool.Pool // the leases' own
}

// leasePoolConns is the size of the leases' own pool: heartbeats and
// renewals must not wait behind imports and subscribers for a connection
// of the main pool, or the leases lapse under load.
const leasePoolConns = 4

func newInstances(ctx context.Context, st *store, logger *slog.Logger) (*instances, error) {
	inst := &instances{id: lease.NewInstanceID()}
	if st.pool == nil {
		return inst, nil
	}
	pcfg := st.pool.Config().Copy()
	pcfg.MaxConns, pcfg.MinConns = leasePoolConns, 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("instance registry: connect: %w", err)
	}
	inst.pool = pool
	coord, err := lease.New(lease.Options{Pool: pool, Instance: inst.id, Logger: logger})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("instance registry: %w", err)
	}
	inst.coord = coord
	inst.exclusive = lease.NewExclusive(st.pool, inst.id, logger)
	return inst, nil
}

// close closes the leases' pool, once the parts using it stopped.
func (i *instances) close() {
	if i.pool != nil {
		i.pool.Close()
	}
}

// leases is the scheduler's Leases: nil on the embedded store.
func (i *instances) leases() ingest.Leases {
	if i.coord == nil {
		return nil
	}
	return i.coord
}

// ownersGone is the outbound saga's OwnersGone: nil on the embedded store.
func (i *instances) ownersGone() func(ctx context.Context, owners []string) (map[string]bool, error) {
	if i.coord == nil {
		return nil
	}
	return i.coord.OwnersGone
}

// parts returns the background parts to supervise: single runs on one
// instance at a time (under its advisory lock), every runs on each
// instance; with PostgreSQL the registry and the lock connection run too.
func (i *instances) parts(single, every map[string]func(context.Context) error) map[string]func(context.Context) error {
	out := maps.Clone(every)
	if i.coord == nil {
		maps.Copy(out, single)
		return out
	}
	for name, run := range single {
		out[name] = i.exclusive.Wrap(name, run)
	}
	out["instance registry and mailbox leases"] = i.coord.Run
	out["single-active locks"] = i.exclusive.Run
	return out
}
