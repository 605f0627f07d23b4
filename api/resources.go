package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore"
)

// LoadResources folds the resource stream: the registry and the stream's
// version.
func LoadResources(ctx context.Context, store eventstore.Store) (domain.Resources, int64, error) {
	return foldStream(ctx, store, domain.ResourcesStream, domain.Resources{ByID: map[string]domain.Resource{}}, domain.EvolveResources)
}

// resourceRefs loads what a resource's references are checked against:
// the users it names and the outgoing accounts.
func (s *server) resourceRefs(ctx context.Context, members []string) (domain.ResourceRefs, error) {
	if s.opts.Directory == nil {
		return domain.ResourceRefs{}, unavailable("the user directory")
	}
	users, err := s.opts.Directory.Users(ctx, members)
	if err != nil {
		return domain.ResourceRefs{}, err
	}
	out, _, err := LoadOutboundAccounts(ctx, s.store)
	if err != nil {
		return domain.ResourceRefs{}, err
	}
	return domain.ResourceRefs{Users: users, Outbound: out}, nil
}

// resourceDecisionError maps a refused resource decision.
func resourceDecisionError(err error) error {
	switch {
	case errors.Is(err, domain.ErrResourceNotFound):
		return &problemError{status: http.StatusNotFound, detail: "there is no resource with this id", cause: err}
	case errors.Is(err, domain.ErrResourceNameTaken):
		return &problemError{status: http.StatusConflict, detail: "another resource has this name", cause: err,
			fields: []FieldError{{Field: "name", Detail: "another resource has this name"}}}
	case errors.Is(err, domain.ErrResourceInUse):
		_, ids, _ := strings.Cut(err.Error(), domain.ErrResourceInUse.Error()+": ")
		return &problemError{status: http.StatusConflict, cause: err,
			detail: "the resource gets the new tickets of inbound accounts " + ids + "; give those accounts another resource first"}
	}
	return unprocessable(err)
}

// resourceWritten answers a write of a resource.
type resourceWritten struct {
	domain.Resource
	Position int64 `json:"position"`
}

func (s *server) createResource(c echo.Context) error {
	var in domain.Resource
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if in.ID != "" {
		return invalid("id", "is assigned by the server; leave it out")
	}
	ctx := c.Request().Context()
	refs, err := s.resourceRefs(ctx, in.Members)
	if err != nil {
		return err
	}
	state, version, err := LoadResources(ctx, s.store)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	if in.ID, err = newID(); err != nil {
		return err
	}
	evs, err := domain.DecideCreateResource(state, in, refs, principal(c).Actor())
	if err != nil {
		return resourceDecisionError(err)
	}
	pos, err := s.appendEvents(c, domain.ResourcesStream, expected, evs)
	if err != nil {
		return err
	}
	created := evs[0].(domain.ResourceCreated).Resource
	setPosition(c, pos)
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/resources/"+created.ID)
	return c.JSON(http.StatusCreated, resourceWritten{Resource: created, Position: pos})
}

func (s *server) listResources(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	state, version, err := LoadResources(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	items := make([]domain.Resource, 0, len(state.ByID))
	for _, r := range state.ByID {
		items = append(items, r)
	}
	sort.Slice(items, func(i, j int) bool {
		if !strings.EqualFold(items[i].Name, items[j].Name) {
			return strings.ToLower(items[i].Name) < strings.ToLower(items[j].Name)
		}
		return items[i].ID < items[j].ID
	})
	setETag(c, version)
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

func (s *server) loadResource(c echo.Context) (domain.Resources, int64, domain.Resource, error) {
	state, version, err := LoadResources(c.Request().Context(), s.store)
	if err != nil {
		return state, 0, domain.Resource{}, err
	}
	r, ok := state.ByID[c.Param("id")]
	if !ok {
		return state, 0, r, resourceDecisionError(fmt.Errorf("%w: %s", domain.ErrResourceNotFound, c.Param("id")))
	}
	return state, version, r, nil
}

func (s *server) getResource(c echo.Context) error {
	if _, err := minPosition(c); err != nil {
		return err
	}
	_, version, r, err := s.loadResource(c)
	if err != nil {
		return err
	}
	setETag(c, version)
	return c.JSON(http.StatusOK, r)
}

// updateResource sets the fields the body names; the others keep their
// value.
func (s *server) updateResource(c echo.Context) error {
	state, version, cur, err := s.loadResource(c)
	if err != nil {
		return err
	}
	next := cur
	next.Members = append([]string(nil), cur.Members...)
	if err := decodeJSON(c, &next); err != nil {
		return err
	}
	if next.ID != cur.ID {
		return invalid("id", "cannot be changed")
	}
	ctx := c.Request().Context()
	refs, err := s.resourceRefs(ctx, next.Members)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	evs, err := domain.DecideUpdateResource(state, next, refs, principal(c).Actor())
	if err != nil {
		return resourceDecisionError(err)
	}
	if len(evs) == 0 {
		setETag(c, version)
		return c.JSON(http.StatusOK, resourceWritten{Resource: cur})
	}
	pos, err := s.appendEvents(c, domain.ResourcesStream, expected, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, resourceWritten{Resource: evs[0].(domain.ResourceUpdated).Resource, Position: pos})
}

func (s *server) deleteResource(c echo.Context) error {
	state, version, cur, err := s.loadResource(c)
	if err != nil {
		return err
	}
	expected, err := expectedVersion(c, version)
	if err != nil {
		return err
	}
	inbound, _, err := LoadInboundAccounts(c.Request().Context(), s.store)
	if err != nil {
		return err
	}
	evs, err := domain.DecideDeleteResource(state, inbound, cur.ID, principal(c).Actor())
	if err != nil {
		return resourceDecisionError(err)
	}
	pos, err := s.appendEvents(c, domain.ResourcesStream, expected, evs)
	if err != nil {
		return err
	}
	setPosition(c, pos)
	return c.JSON(http.StatusOK, map[string]any{"id": cur.ID, "deleted": true, "position": pos})
}

// resourceHistoryItem is one change of a resource.
type resourceHistoryItem struct {
	historyEntry
	Changed  []string         `json:"changed,omitempty"`
	Resource *domain.Resource `json:"resource,omitempty"`
}

// resourceHistory lists who changed what and when, oldest first; it also
// answers for deleted resources.
func (s *server) resourceHistory(c echo.Context) error {
	id := c.Param("id")
	evs, err := s.store.ReadStream(c.Request().Context(), domain.ResourcesStream, 1, 0)
	if err != nil {
		return fmt.Errorf("api: resource history: %w", err)
	}
	items := []resourceHistoryItem{}
	for _, re := range evs {
		ev, err := domain.UnmarshalEvent(re.Type, re.SchemaVersion, re.Payload)
		if err != nil {
			return fmt.Errorf("api: resource history: event %d: %w", re.StreamVersion, err)
		}
		it := resourceHistoryItem{historyEntry: entryOf(re)}
		switch e := ev.(type) {
		case domain.ResourceCreated:
			if e.Resource.ID != id {
				continue
			}
			it.Actor, it.Resource = e.Actor, &e.Resource
		case domain.ResourceUpdated:
			if e.Resource.ID != id {
				continue
			}
			it.Actor, it.Changed, it.Resource = e.Actor, e.Changed, &e.Resource
		case domain.ResourceDeleted:
			if e.ResourceID != id {
				continue
			}
			it.Actor = e.Actor
		default:
			continue
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return resourceDecisionError(fmt.Errorf("%w: %s", domain.ErrResourceNotFound, id))
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// checkResourceRef refuses a resource id that names no resource (field is
// the API field that holds it); "" names none and is always accepted.
func (s *server) checkResourceRef(ctx context.Context, field, id string) error {
	if id == "" {
		return nil
	}
	state, _, err := LoadResources(ctx, s.store)
	if err != nil {
		return err
	}
	if _, ok := state.ByID[id]; !ok {
		p := newProblem(http.StatusUnprocessableEntity, "%s: there is no resource %q (see %s/resources)", field, id, Prefix)
		p.fields = []FieldError{{Field: field, Detail: "names no resource"}}
		return p
	}
	return nil
}
