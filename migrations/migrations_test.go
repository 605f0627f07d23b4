package migrations

import (
	"errors"
	"testing"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	ms := []Migration{{Version: 1, Name: "0001_a.sql"}, {Version: 2, Name: "0002_b.sql"}, {Version: 3, Name: "0003_c.sql"}}
	for _, tc := range []struct {
		name string
		done map[int]bool
		want error
	}{
		{"all applied", map[int]bool{1: true, 2: true, 3: true}, nil},
		{"the newest missing", map[int]bool{1: true, 2: true}, ErrPending},
		{"a gap below the newest (a migration from a parallel branch)", map[int]bool{1: true, 3: true}, ErrPending},
		{"a version this binary does not know", map[int]bool{1: true, 2: true, 3: true, 4: true}, ErrSchemaTooNew},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := status(tc.done, ms)
			if !errors.Is(err, tc.want) {
				t.Errorf("status(%v) = %v, want %v", tc.done, err, tc.want)
			}
		})
	}
}

func TestList_BothDialectsHaveTheSameVersions(t *testing.T) {
	t.Parallel()
	pg, err := List("postgres")
	if err != nil {
		t.Fatal(err)
	}
	lite, err := List("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if len(pg) != len(lite) {
		t.Fatalf("postgres has %d migrations, sqlite %d", len(pg), len(lite))
	}
	for i := range pg {
		if pg[i].Version != lite[i].Version {
			t.Errorf("migration %d: postgres version %d, sqlite %d", i, pg[i].Version, lite[i].Version)
		}
	}
}
