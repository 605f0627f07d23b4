package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/labstack/echo/v4"
)

// decodeJSON reads the request body as one JSON object into dst, refusing
// unknown fields, wrong types and trailing data with a 400 that names the
// field. dst may hold values already: fields the body leaves out keep them.
// A body over the limit is a 413.
func decodeJSON(c echo.Context, dst any) error {
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != echo.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
			return newProblem(http.StatusUnsupportedMediaType, "the request body must be JSON (Content-Type: application/json), not %q", ct)
		}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return he
		}
		return newProblem(http.StatusBadRequest, "the request body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return newProblem(http.StatusBadRequest, "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonProblem(err)
	}
	if dec.More() {
		return newProblem(http.StatusBadRequest, "the request body holds more than one JSON value")
	}
	return nil
}

// jsonProblem explains a decoding error in terms of the request's fields.
func jsonProblem(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return newProblem(http.StatusBadRequest, "the request body must be a JSON object, not %s", typeErr.Value)
		}
		return invalid(jsonPath(typeErr.Field), "must be %s, not %s", jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return newProblem(http.StatusBadRequest, "the request body is not valid JSON (at byte %d): %s",
			syntaxErr.Offset, strings.TrimPrefix(syntaxErr.Error(), "json: "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newProblem(http.StatusBadRequest, "the request body is cut off: incomplete JSON")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field, uerr := strconv.Unquote(name)
		if uerr != nil {
			field = name
		}
		return invalid(field, "is not a known field")
	}
	return newProblem(http.StatusBadRequest, "the request body could not be decoded: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonPath turns the Field of a json.UnmarshalTypeError into the field's
// name in the request: it drops the Go names of embedded structs, which
// start with a capital letter (every JSON name of the API is snake_case).
func jsonPath(field string) string {
	var parts []string
	for p := range strings.SplitSeq(field, ".") {
		if p != "" && unicode.IsUpper(rune(p[0])) {
			continue
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ".")
}

func jsonTypeName(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "a whole number in range"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return fmt.Sprintf("of type %s", kind)
}

// queryInt reads an optional integer query parameter within [lo, hi].
func queryInt(c echo.Context, name string, def, lo, hi int64) (int64, error) {
	raw := c.QueryParam(name)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, invalid(name, "%q is not a whole number", raw)
	}
	if v < lo || v > hi {
		return 0, invalid(name, "%d is not from %d to %d", v, lo, hi)
	}
	return v, nil
}
