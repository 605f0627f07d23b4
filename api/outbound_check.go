package api

import (
	"context"
	"errors"
	"net/http"
	"net/mail"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/ledgerdesk/ledgerdesk/adapters/graphsend"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// CheckOutbound connects and logs in to an outgoing account (secrets still
// sealed) and, with sendTestTo, sends it a test mail
// (ticketing.Outbound.CheckAccount).
type CheckOutbound func(ctx context.Context, a domain.OutboundAccount, sendTestTo string) (ticketing.CheckReply, error)

// outboundCheckInput is the optional body of POST .../check.
type outboundCheckInput struct {
	SendTestTo string `json:"send_test_to"`
}

// outboundCheckResult answers an outgoing account's check.
type outboundCheckResult struct {
	OK bool `json:"ok"`
	// TestMailSent: the server accepted the test mail.
	TestMailSent bool `json:"test_mail_sent"`
	// Stage names the step that failed: dial, starttls, auth, mail, rcpt,
	// data, settings (SMTP) or Graph's.
	Stage string `json:"stage,omitempty"`
	Error string `json:"error,omitempty"`
	// ServerReply is the server's own words: its refusal, or its answer to
	// the accepted test mail ("250 2.0.0 Ok: queued as ...").
	ServerReply string `json:"server_reply,omitempty"`
}

func (s *server) checkOutbound(c echo.Context) error {
	_, _, a, err := s.loadOutbound(c)
	if err != nil {
		return err
	}
	var in outboundCheckInput
	if c.Request().ContentLength != 0 {
		if err := decodeJSON(c, &in); err != nil {
			return err
		}
	}
	if in.SendTestTo != "" {
		addr, err := mail.ParseAddress(in.SendTestTo)
		if err != nil || addr.Name != "" || addr.Address != in.SendTestTo {
			return invalid("send_test_to", "%q is not a mail address", in.SendTestTo)
		}
	}
	if s.opts.CheckOutbound == nil {
		return unavailable("checking outgoing accounts")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), checkTimeout)
	defer cancel()
	reply, err := s.opts.CheckOutbound(ctx, a, in.SendTestTo)
	if err != nil {
		s.logger.Info("outgoing account check failed", "account", a.ID, "err", err)
		out := outboundCheckResult{Error: mailsource.Excerpt(err.Error(), checkErrorLen)}
		var se *smtpsend.Error
		var ge *graphsend.Error
		switch {
		case errors.As(err, &se):
			out.Stage = se.Stage
			if se.Code != 0 { // the server spoke; otherwise the words are ours
				out.ServerReply = mailsource.Excerpt(smtpReply(se), mailsource.MaxReplyLen)
			}
		case errors.As(err, &ge):
			out.Stage = ge.Stage
			if ge.Code != 0 {
				out.ServerReply = mailsource.Excerpt(ge.Reply, mailsource.MaxReplyLen)
			}
		}
		return c.JSON(http.StatusOK, out)
	}
	if reply.TestMailSent {
		s.logger.Info("outgoing account check sent a test mail", "account", a.ID, "reply", reply.Reply)
	}
	return c.JSON(http.StatusOK, outboundCheckResult{OK: true, TestMailSent: reply.TestMailSent,
		ServerReply: mailsource.Excerpt(reply.Reply, mailsource.MaxReplyLen)})
}

// smtpReply renders a refusal as the server sent it: code, enhanced code
// and text ("535 5.7.8 Authentication failed").
func smtpReply(e *smtpsend.Error) string {
	out := strconv.Itoa(e.Code) + " "
	if e.Enhanced != "" {
		out += e.Enhanced + " "
	}
	return out + e.Reply
}
