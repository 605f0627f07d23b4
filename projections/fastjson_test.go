package projections

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// foldedEvents are the event types the rebuild's folds look into; each must
// have a plan, or the rebuild silently falls back to encoding/json.
var foldedEvents = []string{
	domain.TicketCreatedName, domain.MailAppendedName, domain.MailBundledName, domain.TicketReactivatedName,
	domain.TicketStatusChangedName, domain.TicketClosedName, domain.TicketReopenedName, domain.TicketAssignedName,
	domain.TicketCategoryChangedName, domain.TicketPriorityChangedName, domain.NoteAddedName,
	domain.DeliveryFailureRecordedName, domain.ReplyQueuedName, domain.AutoReplyQueuedName, domain.ErrorMailQueuedName,
	domain.UserAutoCreatedName, domain.UserCreatedName, domain.UserUpdatedName,
	domain.LocationAutoCreatedName, domain.LocationCreatedName,
}

// samples fills strings with what json.Marshal escapes or passes through:
// HTML, control characters, line separators, non-ASCII, invalid UTF-8 (it
// writes U+FFFD for it) and characters outside the BMP.
var samples = []string{"", "x", "Printer on floor 2", "<p>a & b</p>", "line\nbreak\r\n\ttab", "quote \" and \\ back",
	"Grüße aus Köln", "\u2028\u2029", "\x01\x1f", "bad \xff utf-8", "emoji 😀", "日本語", "/slash/"}

// fill sets every field that encoding/json would set to something random.
func fill(r *rand.Rand, v reflect.Value) {
	if v.Type() == reflect.TypeFor[time.Time]() {
		t := time.Date(2000+r.IntN(40), time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e9), time.UTC)
		if r.IntN(4) == 0 {
			t = time.Time{}
		}
		v.Set(reflect.ValueOf(t))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(samples[r.IntN(len(samples))])
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(r.Uint64()) >> (64 - v.Type().Bits()) >> r.IntN(v.Type().Bits()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(r.Uint64() >> (64 - v.Type().Bits()) >> r.IntN(v.Type().Bits()))
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(r.Float64() * 1000)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(r, v.Field(i))
			}
		}
	case reflect.Slice:
		n := r.IntN(4)
		if n == 3 {
			return // nil
		}
		v.Set(reflect.MakeSlice(v.Type(), n, n))
		for i := range n {
			fill(r, v.Index(i))
		}
	case reflect.Map:
		if r.IntN(3) == 0 {
			return
		}
		v.Set(reflect.MakeMap(v.Type()))
		for range r.IntN(3) {
			k := reflect.New(v.Type().Key()).Elem()
			e := reflect.New(v.Type().Elem()).Elem()
			fill(r, k)
			fill(r, e)
			v.SetMapIndex(k, e)
		}
	case reflect.Pointer:
		if r.IntN(2) == 0 {
			v.Set(reflect.New(v.Type().Elem()))
			fill(r, v.Elem())
		}
	}
}

func TestUnmarshalEvent_SameAsTheDomain(t *testing.T) {
	t.Parallel()
	for _, name := range foldedEvents {
		if _, ok := eventPlans()[name]; !ok {
			t.Errorf("no plan for %s: its payloads go through encoding/json", name)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	names := domain.EventNames()
	slices.Sort(names)
	for _, name := range names {
		zero, err := domain.UnmarshalEvent(name, 1, []byte("{}"))
		if err != nil {
			t.Fatalf("UnmarshalEvent(%s, {}) error = %v", name, err)
		}
		for range 200 {
			v := reflect.New(reflect.TypeOf(zero)).Elem()
			fill(r, v)
			_, version, payload, err := domain.MarshalEvent(v.Interface().(domain.Event))
			if err != nil {
				t.Fatalf("MarshalEvent(%s) error = %v", name, err)
			}
			want, err := domain.UnmarshalEvent(name, version, payload)
			if err != nil {
				t.Fatalf("UnmarshalEvent(%s, %s) error = %v", name, payload, err)
			}
			if ep, ok := eventPlans()[name]; ok && !ep.plan.decode(payload, reflect.New(ep.plan.typ).Elem()) {
				t.Errorf("the plan of %s declines what json.Marshal wrote: %s", name, payload)
			}
			got, err := unmarshalEvent(name, version, payload)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("unmarshalEvent(%s, %s) = %#v, %v; want %#v", name, payload, got, err, want)
			}
		}
	}
}

// FuzzJSONPlan checks that whatever a plan decodes, json.Unmarshal decodes
// without error and to the same value.
func FuzzJSONPlan(f *testing.F) {
	for _, seed := range []string{
		`{}`, ` { } `, `{} x`, `null`, `[]`, `{"ticket_id":"a"}`, `{"ticket_id":"a","Ticket_id":"b"}`,
		`{"ticket_id":"a","ticket_id":"b"}`, `{"TICKET_ID":"a"}`, `{"number":1.5}`, `{"number":"1"}`, `{"number":1e2}`,
		`{"number":-0}`, `{"number":99999999999999999999}`, `{"number":01}`, `{"number":1.}`, `{"number":-}`,
		`{"subject":"\ud83d\ude00"}`, `{"subject":"\ud83d"}`, `{"subject":"a\u00e9\n\/"}`, "{\"subject\":\"\xff\"}",
		"{\"subject\":\"\x01\"}", `{"subject":"\x"}`, `{"to":[]}`, `{"to":null}`, `{"to":[null]}`, `{"to":[{"email":"a"},{}]}`,
		`{"from":null}`, `{"from":{"email":1}}`, `{"created_at":null}`, `{"created_at":"bad"}`,
		`{"created_at":"2026-01-02T03:04:05.123+02:00"}`, `{"created_at":"2026-01-02T03:04:05Z","requester":{"source":"x"}}`,
		`{"unknown":[1,{"b":[true,false,null,"\u0041"]}],"subject":"s"}`, `{"unknown":tru}`, `{"loop_headers":{"x":"1","x":"2"}}`,
		`{"loop_headers":{}}`, `{"loop_headers":{"\u00e9":null}}`, `{"references":["a",null]}`, `{"return_path_empty":true}`,
		`{"return_path_empty":"true"}`, `{"size":-1}`, `{"ticket_id":"a",}`, `{"ticket_id" : "a" , "number" : 7 }`,
	} {
		f.Add([]byte(seed))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, name := range domain.EventNames() {
		zero, _ := domain.UnmarshalEvent(name, 1, []byte("{}"))
		v := reflect.New(reflect.TypeOf(zero)).Elem()
		fill(r, v)
		if _, _, payload, err := domain.MarshalEvent(v.Interface().(domain.Event)); err == nil {
			f.Add(payload)
		}
	}
	var plans []*jsonPlan
	names := domain.EventNames()
	slices.Sort(names)
	for _, name := range names {
		if ep, ok := eventPlans()[name]; ok {
			plans = append(plans, ep.plan)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range plans {
			got := reflect.New(p.typ)
			if !p.decode(data, got.Elem()) {
				continue
			}
			want := reflect.New(p.typ)
			if err := json.Unmarshal(data, want.Interface()); err != nil {
				t.Fatalf("%s: the plan decodes %q, json.Unmarshal fails: %v", p.typ, data, err)
			}
			if !reflect.DeepEqual(got.Interface(), want.Interface()) {
				t.Fatalf("%s: decode(%q) = %#v, json.Unmarshal gives %#v", p.typ, data, got.Interface(), want.Interface())
			}
		}
	})
}
