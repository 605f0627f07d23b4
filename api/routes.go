package api

import (
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/domain"
)

// Prefix is where the REST API lives.
const Prefix = "/api/v1"

// Role sets of the route table.
var (
	rolesAdmin   = []domain.Role{domain.RoleAdmin}
	rolesAll     = []domain.Role{domain.RoleAdmin, domain.RoleAgent, domain.RoleAuditor, domain.RoleAnalyst}
	rolesReaders = []domain.Role{domain.RoleAdmin, domain.RoleAgent, domain.RoleAuditor}
	rolesAudit   = []domain.Role{domain.RoleAdmin, domain.RoleAuditor}
	rolesPoll    = []domain.Role{domain.RoleAdmin, domain.RoleAgent}
	rolesAgents  = []domain.Role{domain.RoleAdmin, domain.RoleAgent}
	rolesMetrics = []domain.Role{domain.RoleAdmin, domain.RoleMetrics}
	// rolesAny is every role: the API's description is no secret.
	rolesAny = append(slices.Clip(rolesAll), domain.RoleMetrics)
)

// route is one operation of the API and the roles that may use it. This
// table is the single source of who may do what: New registers it, and the
// OpenAPI document's x-roles must match it (openapi_test.go).
type route struct {
	Method  string
	Path    string // Echo syntax (:id)
	Roles   []domain.Role
	Handler echo.HandlerFunc
}

func (s *server) routes() []route {
	return []route{
		{http.MethodGet, Prefix + "/openapi.json", rolesAny, s.openAPI},

		{http.MethodPost, Prefix + "/tokens", rolesAdmin, s.issueToken},
		{http.MethodGet, Prefix + "/tokens", rolesAdmin, s.listTokens},
		{http.MethodDelete, Prefix + "/tokens/:id", rolesAdmin, s.revokeToken},

		{http.MethodPost, Prefix + "/inbound-accounts", rolesAdmin, s.createAccount},
		{http.MethodGet, Prefix + "/inbound-accounts", rolesReaders, s.listAccounts},
		{http.MethodGet, Prefix + "/inbound-accounts/:id", rolesReaders, s.getAccount},
		{http.MethodPut, Prefix + "/inbound-accounts/:id", rolesAdmin, s.updateAccount},
		{http.MethodDelete, Prefix + "/inbound-accounts/:id", rolesAdmin, s.deleteAccount},
		{http.MethodGet, Prefix + "/inbound-accounts/:id/history", rolesAudit, s.accountHistory},
		{http.MethodPost, Prefix + "/inbound-accounts/:id/check", rolesAdmin, s.checkAccount},
		{http.MethodPost, Prefix + "/inbound-accounts/:id/poll", rolesPoll, s.pollAccount},

		{http.MethodPost, Prefix + "/oauth-connections", rolesAdmin, s.createConnection},
		{http.MethodGet, Prefix + "/oauth-connections", rolesReaders, s.listConnections},
		{http.MethodGet, Prefix + "/oauth-connections/:id", rolesReaders, s.getConnection},
		{http.MethodPut, Prefix + "/oauth-connections/:id", rolesAdmin, s.updateConnection},
		{http.MethodDelete, Prefix + "/oauth-connections/:id", rolesAdmin, s.deleteConnection},
		{http.MethodGet, Prefix + "/oauth-connections/:id/history", rolesAudit, s.connectionHistory},
		{http.MethodPost, Prefix + "/oauth-connections/:id/authorize", rolesAdmin, s.authorizeConnection},
		{http.MethodGet, Prefix + "/presets", rolesReaders, s.listPresets},

		{http.MethodGet, Prefix + "/settings", rolesReaders, s.getSettings},
		{http.MethodPut, Prefix + "/settings", rolesAdmin, s.putSettings},

		{http.MethodGet, Prefix + "/mailboxes", rolesAll, s.listMailboxes},

		{http.MethodGet, Prefix + "/events", rolesAudit, s.listEvents},
		{http.MethodGet, Prefix + "/stream", rolesAll, s.stream},
		{http.MethodGet, MetricsPath, rolesMetrics, s.metrics},

		{http.MethodGet, Prefix + "/tickets", rolesAll, s.listTickets},
		{http.MethodGet, Prefix + "/tickets/:id", rolesAll, s.getTicket},
		{http.MethodGet, Prefix + "/tickets/:id/history", rolesReaders, s.ticketHistory},
		{http.MethodPost, Prefix + "/tickets/:id/status", rolesAgents, s.postStatus},
		{http.MethodPost, Prefix + "/tickets/:id/assign", rolesAgents, s.postAssign},
		{http.MethodPost, Prefix + "/tickets/:id/notes", rolesAgents, s.postNote},
		{http.MethodPost, Prefix + "/tickets/:id/replies", rolesAgents, s.postReply},
		{http.MethodGet, Prefix + "/tickets/:id/articles/:seq/body", rolesReaders, s.articleBody},
		{http.MethodGet, Prefix + "/tickets/:id/articles/:seq/attachments", rolesReaders, s.listAttachments},
		{http.MethodGet, Prefix + "/tickets/:id/articles/:seq/attachments/:n", rolesReaders, s.getAttachment},
		{http.MethodGet, Prefix + "/tickets/:id/articles/:seq/inline/:cid", rolesReaders, s.getInline},
		{http.MethodGet, Prefix + "/tickets/:id/articles/:seq/eml", rolesReaders, s.getEML},

		{http.MethodGet, Prefix + "/users", rolesAll, s.listUsers},
		{http.MethodPost, Prefix + "/users", rolesAdmin, s.createUser},
		{http.MethodGet, Prefix + "/users/:id", rolesAll, s.getUser},
		{http.MethodPut, Prefix + "/users/:id", rolesAdmin, s.updateUser},
		{http.MethodDelete, Prefix + "/users/:id", rolesAdmin, s.deleteUser},
		{http.MethodGet, Prefix + "/users/:id/history", rolesAudit, s.userHistory},
		{http.MethodGet, Prefix + "/locations", rolesAll, s.listLocations},
		{http.MethodPost, Prefix + "/locations", rolesAdmin, s.createLocation},
		{http.MethodGet, Prefix + "/locations/:id", rolesAll, s.getLocation},
		{http.MethodPut, Prefix + "/locations/:id", rolesAdmin, s.updateLocation},
		{http.MethodDelete, Prefix + "/locations/:id", rolesAdmin, s.deleteLocation},
		{http.MethodGet, Prefix + "/locations/:id/history", rolesAudit, s.locationHistory},

		{http.MethodPost, Prefix + "/resources", rolesAdmin, s.createResource},
		{http.MethodGet, Prefix + "/resources", rolesAll, s.listResources},
		{http.MethodGet, Prefix + "/resources/:id", rolesAll, s.getResource},
		{http.MethodPut, Prefix + "/resources/:id", rolesAdmin, s.updateResource},
		{http.MethodDelete, Prefix + "/resources/:id", rolesAdmin, s.deleteResource},
		{http.MethodGet, Prefix + "/resources/:id/history", rolesAudit, s.resourceHistory},

		{http.MethodPost, Prefix + "/outbound-accounts", rolesAdmin, s.createOutbound},
		{http.MethodGet, Prefix + "/outbound-accounts", rolesReaders, s.listOutbound},
		{http.MethodGet, Prefix + "/outbound-accounts/:id", rolesReaders, s.getOutbound},
		{http.MethodPut, Prefix + "/outbound-accounts/:id", rolesAdmin, s.updateOutbound},
		{http.MethodDelete, Prefix + "/outbound-accounts/:id", rolesAdmin, s.deleteOutbound},
		{http.MethodPost, Prefix + "/outbound-accounts/:id/check", rolesAdmin, s.checkOutbound},

		{http.MethodGet, Prefix + "/templates", rolesReaders, s.listTemplates},
		{http.MethodGet, Prefix + "/templates/:name", rolesReaders, s.getTemplate},
		{http.MethodPut, Prefix + "/templates/:name", rolesAdmin, s.putTemplate},
	}
}
