package api

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDoc is the hand-written OpenAPI 3 document of /api/v1.
// openapi_test.go fails when it and the route table disagree.
//
//go:embed openapi.json
var openAPIDoc []byte

func (s *server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDoc)
}
