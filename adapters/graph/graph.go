// Package graph holds what every adapter that talks to Microsoft Graph's
// mail API shares, on net/http and without the Graph SDK: the Prefer
// header for immutable ids, Retry-After, Graph's error answers, words of
// an answer that is not Graph's, and the per-mailbox concurrency limit.
// graphsource (inbound) and graphsend (outbound) import it; the fake Graph
// of their tests is graphtest.
package graph

// PreferImmutableID is the Prefer header value sent on every Graph
// request: ids then survive moves between folders. It applies only to the
// request that carries it, so every request (and every request inside a
// $batch) does. See https://learn.microsoft.com/graph/outlook-immutable-id.
const PreferImmutableID = `IdType="ImmutableId"`
