package projections

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// A rebuild decodes every payload of the log, and encoding/json spends most
// of its time there on reading each byte twice through a state machine
// (once to validate, once to decode). jsonPlan decodes the payloads that
// json.Marshal writes (objects of strings, integers, booleans, times,
// nested objects, arrays and string maps) in one pass and gives exactly
// what json.Unmarshal gives for them. Whatever it does not handle, or would
// handle differently, it declines (decode returns false): invalid JSON, type
// mismatches, duplicate keys, keys that only match a field case-insensitively,
// escaped or non-ASCII keys, UTF-16 surrogate escapes, invalid UTF-8, floats,
// pointers, interfaces, ",string" fields and types with their own
// UnmarshalText. The caller then uses json.Unmarshal, so every payload
// decodes as before; FuzzJSONPlan holds the two to the same results.

// jsonPlan decodes JSON objects into one struct type.
type jsonPlan struct {
	typ  reflect.Type
	root *structPlan
}

// newJSONPlan returns the plan of struct type t, or nil when t has a field
// the plan cannot decode.
func newJSONPlan(t reflect.Type) *jsonPlan {
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(jsonUnmarshalerType) ||
		reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return nil
	}
	sp := structPlanOf(t, map[reflect.Type]bool{})
	if sp == nil {
		return nil
	}
	return &jsonPlan{typ: t, root: sp}
}

// decode decodes data into v (an addressable zero value of p.typ); false
// means the caller must decode with json.Unmarshal (v is then in an
// unspecified state). The strings without escapes share data's memory
// (no allocation, no copy: a rebuild decodes every payload of the log), so
// data must never change afterwards, and a string kept for long keeps data
// alive: clone those (see keep).
func (p *jsonPlan) decode(data []byte, v reflect.Value) bool {
	buf := unquoteBufs.Get().(*[]byte)
	defer unquoteBufs.Put(buf)
	d := jsonDecoder{data: data, src: unsafe.String(unsafe.SliceData(data), len(data)), buf: *buf}
	d.ws()
	ok := d.eat('{') && d.object(p.root, v, 0)
	d.ws()
	*buf = d.buf[:0]
	return ok && d.pos == len(d.data)
}

// unquoteBufs holds the buffers of strings with escapes.
var unquoteBufs = sync.Pool{New: func() any { return new([]byte) }}

type planKind uint8

const (
	planString planKind = iota
	planInt
	planUint
	planBool
	planStruct
	planSlice
	planMap
	planUnmarshaler // json.Unmarshaler, e.g. time.Time
)

type valuePlan struct {
	kind   planKind
	typ    reflect.Type
	fields *structPlan // planStruct
	elem   *valuePlan  // planSlice, planMap (the value)
}

type fieldPlan struct {
	name  string
	index []int
	plan  *valuePlan
}

type structPlan struct {
	fields []fieldPlan
	byName map[string]int
	folded map[string]bool // the names in upper case
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// maxPlanFields bounds the fields of one struct (duplicate keys are found
// with a bit set).
const maxPlanFields = 64

func planValue(t reflect.Type, inProgress map[reflect.Type]bool) *valuePlan {
	if t.Name() == "" {
		// encoding/json looks for methods of unnamed types differently
		// (embedding can promote them); those are left to it.
		if t.Implements(jsonUnmarshalerType) || t.Implements(textUnmarshalerType) ||
			reflect.PointerTo(t).Implements(jsonUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
			return nil
		}
	} else {
		if reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
			return &valuePlan{kind: planUnmarshaler, typ: t}
		}
		if reflect.PointerTo(t).Implements(textUnmarshalerType) {
			return nil
		}
	}
	switch t.Kind() {
	case reflect.String:
		return &valuePlan{kind: planString, typ: t}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &valuePlan{kind: planInt, typ: t}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &valuePlan{kind: planUint, typ: t}
	case reflect.Bool:
		return &valuePlan{kind: planBool, typ: t}
	case reflect.Struct:
		if sp := structPlanOf(t, inProgress); sp != nil {
			return &valuePlan{kind: planStruct, typ: t, fields: sp}
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 { // base64
			return nil
		}
		if elem := planValue(t.Elem(), inProgress); elem != nil {
			return &valuePlan{kind: planSlice, typ: t, elem: elem}
		}
	case reflect.Map:
		k := t.Key()
		if k.Kind() != reflect.String || reflect.PointerTo(k).Implements(textUnmarshalerType) {
			return nil
		}
		if elem := planValue(t.Elem(), inProgress); elem != nil {
			return &valuePlan{kind: planMap, typ: t, elem: elem}
		}
	}
	return nil
}

// structPlanOf lists the JSON fields of struct t as encoding/json does for
// the cases it accepts: exported fields named by their tag or Go name, and
// the fields of embedded structs (not pointers) promoted, all names
// distinct and ASCII.
func structPlanOf(t reflect.Type, inProgress map[reflect.Type]bool) *structPlan {
	if inProgress[t] { // recursive types
		return nil
	}
	inProgress[t] = true
	defer delete(inProgress, t)
	sp := &structPlan{byName: map[string]int{}, folded: map[string]bool{}}
	var walk func(t reflect.Type, index []int) bool
	walk = func(t reflect.Type, index []int) bool {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			for o := range strings.SplitSeq(opts, ",") {
				if o != "" && o != "omitempty" && o != "omitzero" {
					return false // ",string" and whatever else may come
				}
			}
			if sf.Anonymous {
				if sf.Type.Kind() == reflect.Pointer || !sf.IsExported() && name != "" {
					return false
				}
				if !sf.IsExported() && sf.Type.Kind() != reflect.Struct {
					continue
				}
				if name == "" && sf.Type.Kind() == reflect.Struct {
					if !walk(sf.Type, append(index[:len(index):len(index)], i)) {
						return false
					}
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			if !plainName(name) {
				return false
			}
			if _, dup := sp.byName[name]; dup {
				return false // encoding/json's dominance rules decide
			}
			vp := planValue(sf.Type, inProgress)
			if vp == nil {
				return false
			}
			sp.byName[name] = len(sp.fields)
			sp.folded[strings.ToUpper(name)] = true
			sp.fields = append(sp.fields, fieldPlan{name: name, index: append(index[:len(index):len(index)], i), plan: vp})
		}
		return true
	}
	if !walk(t, nil) || len(sp.fields) > maxPlanFields {
		return nil
	}
	// Names that fold to each other make the case-insensitive match pick one.
	for i, a := range sp.fields {
		for _, b := range sp.fields[i+1:] {
			if strings.EqualFold(a.name, b.name) {
				return nil
			}
		}
	}
	return sp
}

// plainName reports whether a field name is one encoding/json takes as it
// is and that matches keys the way foldsToField assumes.
func plainName(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// foldsToField reports whether key (ASCII) matches a field only
// case-insensitively, which json.Unmarshal accepts.
func (sp *structPlan) foldsToField(key []byte) bool {
	var buf [64]byte
	if len(key) > len(buf) {
		return true // longer than any field name here; decline rather than allocate
	}
	upper := buf[:len(key)]
	for i, c := range key {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper[i] = c
	}
	return sp.folded[string(upper)]
}

// maxJSONDepth bounds nesting; deeper documents go to encoding/json.
const maxJSONDepth = 64

type jsonDecoder struct {
	data []byte
	src  string // data as a string
	pos  int
	buf  []byte // for strings with escapes
}

func (d *jsonDecoder) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) peek() byte {
	if d.pos < len(d.data) {
		return d.data[d.pos]
	}
	return 0
}

func (d *jsonDecoder) eat(c byte) bool {
	if d.pos < len(d.data) && d.data[d.pos] == c {
		d.pos++
		return true
	}
	return false
}

// object decodes the members of an object whose '{' has been read.
func (d *jsonDecoder) object(sp *structPlan, v reflect.Value, depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	d.ws()
	if d.eat('}') {
		return true
	}
	var seen uint64
	expect := 0 // json.Marshal writes the fields in order: try the next one first
	for {
		key, ok := d.plainKey()
		if !ok {
			return false
		}
		d.ws()
		if !d.eat(':') {
			return false
		}
		d.ws()
		i, ok := expect, expect < len(sp.fields) && sp.fields[expect].name == string(key)
		if !ok {
			i, ok = sp.byName[string(key)]
		}
		if ok {
			expect = i + 1
			if seen&(1<<i) != 0 {
				return false
			}
			seen |= 1 << i
			f := &sp.fields[i]
			fv := v.Field(f.index[0])
			for _, j := range f.index[1:] {
				fv = fv.Field(j)
			}
			if !d.value(f.plan, fv, depth+1) {
				return false
			}
		} else {
			if sp.foldsToField(key) || !d.skip(depth+1) {
				return false
			}
		}
		d.ws()
		if d.eat(',') {
			d.ws()
			continue
		}
		return d.eat('}')
	}
}

// plainKey reads a key without escapes and of ASCII only.
func (d *jsonDecoder) plainKey() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c == '"' {
			d.pos++
			return d.data[start : d.pos-1], true
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return nil, false
		}
		d.pos++
	}
	return nil, false
}

func (d *jsonDecoder) value(p *valuePlan, v reflect.Value, depth int) bool {
	if d.peek() == 'n' {
		if !d.literal("null") {
			return false
		}
		if p.kind == planUnmarshaler {
			return v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(d.data[d.pos-4:d.pos]) == nil
		}
		// null leaves the zero value there (no key comes twice).
		return true
	}
	switch p.kind {
	case planString:
		s, ok := d.str()
		if ok {
			v.SetString(s)
		}
		return ok
	case planInt:
		lit, ok := d.number()
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(string(lit), 10, 64)
		if err != nil || v.OverflowInt(n) {
			return false
		}
		v.SetInt(n)
		return true
	case planUint:
		lit, ok := d.number()
		if !ok {
			return false
		}
		n, err := strconv.ParseUint(string(lit), 10, 64)
		if err != nil || v.OverflowUint(n) {
			return false
		}
		v.SetUint(n)
		return true
	case planBool:
		switch {
		case d.literal("true"):
			v.SetBool(true)
		case d.literal("false"):
		default:
			return false
		}
		return true
	case planStruct:
		return d.eat('{') && d.object(p.fields, v, depth)
	case planSlice:
		return d.eat('[') && d.array(p, v, depth)
	case planMap:
		return d.eat('{') && d.mapObject(p, v, depth)
	case planUnmarshaler:
		start := d.pos
		if !d.skip(depth) {
			return false
		}
		return v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(d.data[start:d.pos]) == nil
	}
	return false
}

// array decodes the elements of an array whose '[' has been read into the
// nil slice v; an empty array gives an empty slice, as with encoding/json.
func (d *jsonDecoder) array(p *valuePlan, v reflect.Value, depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	d.ws()
	if d.eat(']') {
		v.Set(reflect.MakeSlice(p.typ, 0, 0))
		return true
	}
	for i := 0; ; i++ {
		v.Grow(1)
		v.SetLen(i + 1)
		if !d.value(p.elem, v.Index(i), depth+1) {
			return false
		}
		d.ws()
		if d.eat(',') {
			d.ws()
			continue
		}
		return d.eat(']')
	}
}

// mapObject decodes an object whose '{' has been read into the nil map v.
func (d *jsonDecoder) mapObject(p *valuePlan, v reflect.Value, depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	v.Set(reflect.MakeMap(p.typ))
	d.ws()
	if d.eat('}') {
		return true
	}
	for {
		if d.peek() != '"' {
			return false
		}
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if !d.eat(':') {
			return false
		}
		d.ws()
		elem := reflect.New(p.typ.Elem()).Elem()
		if !d.value(p.elem, elem, depth+1) {
			return false
		}
		v.SetMapIndex(reflect.ValueOf(key).Convert(p.typ.Key()), elem)
		d.ws()
		if d.eat(',') {
			d.ws()
			continue
		}
		return d.eat('}')
	}
}

func (d *jsonDecoder) literal(lit string) bool {
	if strings.HasPrefix(string(d.data[d.pos:min(len(d.data), d.pos+len(lit))]), lit) {
		d.pos += len(lit)
		return true
	}
	return false
}

// plainByte marks the bytes a string holds as they are: not '"', '\\', a
// control character or the start of a multi-byte character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string as encoding/json unquotes it, declining surrogate
// escapes and invalid UTF-8 (which it replaces by U+FFFD).
func (d *jsonDecoder) str() (string, bool) {
	if !d.eat('"') {
		return "", false
	}
	start := d.pos
	for d.pos < len(d.data) && plainByte[d.data[d.pos]] {
		d.pos++
	}
	if d.pos < len(d.data) && d.data[d.pos] == '"' {
		d.pos++
		return d.src[start : d.pos-1], true
	}
	b := append(d.buf[:0], d.data[start:d.pos]...)
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			d.buf = b
			return string(b), true
		case c == '\\':
			r, ok := d.escape()
			if !ok {
				return "", false
			}
			b = utf8.AppendRune(b, r)
		case c < 0x20:
			return "", false
		case c < utf8.RuneSelf:
			// a run of plain bytes at once (HTML bodies come with every
			// '<' and '>' escaped, so most strings with escapes are long)
			start := d.pos
			for d.pos++; d.pos < len(d.data) && plainByte[d.data[d.pos]]; d.pos++ {
			}
			b = append(b, d.data[start:d.pos]...)
		default:
			r, n := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && n == 1 {
				return "", false
			}
			b = append(b, d.data[d.pos:d.pos+n]...)
			d.pos += n
		}
	}
	return "", false
}

// escape reads one escape sequence (at its '\\').
func (d *jsonDecoder) escape() (rune, bool) {
	if d.pos+1 >= len(d.data) {
		return 0, false
	}
	c := d.data[d.pos+1]
	d.pos += 2
	switch c {
	case '"', '\\', '/':
		return rune(c), true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case 'u':
		if d.pos+4 > len(d.data) {
			return 0, false
		}
		var r rune
		for _, h := range d.data[d.pos : d.pos+4] {
			switch {
			case h >= '0' && h <= '9':
				h -= '0'
			case h >= 'a' && h <= 'f':
				h -= 'a' - 10
			case h >= 'A' && h <= 'F':
				h -= 'A' - 10
			default:
				return 0, false
			}
			r = r<<4 | rune(h)
		}
		d.pos += 4
		if utf16.IsSurrogate(r) {
			return 0, false
		}
		return r, true
	}
	return 0, false
}

// number reads a number as the JSON grammar has it.
func (d *jsonDecoder) number() ([]byte, bool) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	d.eat('-')
	switch {
	case d.eat('0'):
	case digits() == 0:
		return nil, false
	}
	if d.eat('.') && digits() == 0 {
		return nil, false
	}
	if d.eat('e') || d.eat('E') {
		if !d.eat('+') {
			d.eat('-')
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return d.data[start:d.pos], true
}

// skip reads a value of any kind, checking that it is valid JSON.
func (d *jsonDecoder) skip(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	switch c := d.peek(); {
	case c == '"':
		_, ok := d.str()
		return ok
	case c == '{':
		d.pos++
		d.ws()
		if d.eat('}') {
			return true
		}
		for {
			if d.peek() != '"' {
				return false
			}
			if _, ok := d.str(); !ok {
				return false
			}
			d.ws()
			if !d.eat(':') {
				return false
			}
			d.ws()
			if !d.skip(depth + 1) {
				return false
			}
			d.ws()
			if d.eat(',') {
				d.ws()
				continue
			}
			return d.eat('}')
		}
	case c == '[':
		d.pos++
		d.ws()
		if d.eat(']') {
			return true
		}
		for {
			if !d.skip(depth + 1) {
				return false
			}
			d.ws()
			if d.eat(',') {
				d.ws()
				continue
			}
			return d.eat(']')
		}
	case c == '-' || c >= '0' && c <= '9':
		_, ok := d.number()
		return ok
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	}
	return false
}

// eventPlan is the plan of a registered event type's current schema version.
type eventPlan struct {
	version int
	plan    *jsonPlan
	scratch sync.Pool // of pointers to zero values to decode into
}

// eventPlans maps the stored names of the event types to their plans; the
// types come from the domain's codec (it decodes "{}" into a zero value of
// each).
var eventPlans = sync.OnceValue(func() map[string]*eventPlan {
	plans := map[string]*eventPlan{}
	for _, name := range domain.EventNames() {
		e, err := domain.UnmarshalEvent(name, 1, []byte("{}"))
		if err != nil {
			continue
		}
		_, version, _, err := domain.MarshalEvent(e)
		if err != nil {
			continue
		}
		if p := newJSONPlan(reflect.TypeOf(e)); p != nil {
			plans[name] = &eventPlan{version: version, plan: p,
				scratch: sync.Pool{New: func() any { return reflect.New(p.typ).Interface() }}}
		}
	}
	return plans
})

// unmarshalEvent is domain.UnmarshalEvent, which decodes a payload of the
// current schema version with json.Unmarshal, with jsonPlan tried first.
func unmarshalEvent(name string, schemaVersion int, payload []byte) (domain.Event, error) {
	if ep, ok := eventPlans()[name]; ok && schemaVersion == ep.version {
		ptr := ep.scratch.Get()
		v := reflect.ValueOf(ptr).Elem()
		var e domain.Event
		if ep.plan.decode(payload, v) {
			e, _ = v.Interface().(domain.Event) // a copy
		}
		v.SetZero()
		ep.scratch.Put(ptr)
		if e != nil {
			return e, nil
		}
	}
	return domain.UnmarshalEvent(name, schemaVersion, payload)
}
