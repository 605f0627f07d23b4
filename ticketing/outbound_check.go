package ticketing

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graphsend"
	"github.com/ledgerdesk/ledgerdesk/adapters/smtpsend"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// CheckReply is what the server of an outgoing account answered a check.
type CheckReply struct {
	// TestMailSent: the server accepted the test mail.
	TestMailSent bool
	// Reply is the server's answer to the test mail (SMTP: "250 " and its
	// words after DATA, often a queue id; Graph: its request-id), "" when
	// no test mail was asked for.
	Reply string
}

// CheckAccount connects to an outgoing account's server and logs in
// exactly as a send does (SMTP: dial, TLS, AUTH; Graph: an access token of
// its connection), sending nothing. With testTo it then sends a short test
// mail there (seed 004's "mailbox check: recipient address"), marked
// automatic so that no auto-responder answers it. A refusal is the
// protocol's error (*smtpsend.Error, *graphsend.Error) carrying the
// server's code and words. Nothing is recorded: a check is a probe.
func (s *Outbound) CheckAccount(ctx context.Context, acc domain.OutboundAccount, settings domain.Settings, testTo string) (CheckReply, error) {
	var raw []byte
	if testTo != "" {
		m, err := testMail(acc, settings, testTo, s.o.Now())
		if err != nil {
			return CheckReply{}, err
		}
		raw = m
	}
	if acc.Protocol == domain.OutboundGraph {
		return s.checkGraph(ctx, acc, raw)
	}
	server, err := s.smtpAccount(acc, settings)
	if err != nil {
		return CheckReply{}, &smtpsend.Error{Stage: smtpsend.StageSettings, Reply: err.Error()}
	}
	if raw == nil {
		c, err := smtpsend.Dial(ctx, server)
		if err != nil {
			return CheckReply{}, err
		}
		_ = c.Quit()
		return CheckReply{}, nil
	}
	// A Sender of its own: the check's connection is not kept for the
	// queue, and the queue's idle ones are not what is being checked.
	sender := smtpsend.NewSender()
	defer func() { _ = sender.Close() }()
	res, err := sender.Send(ctx, server, smtpsend.Envelope{From: acc.SenderAddress, To: []string{testTo}}, raw)
	if err != nil {
		return CheckReply{}, err
	}
	return CheckReply{TestMailSent: true, Reply: "250 " + res.Reply}, nil
}

// checkGraph gets a token for a graph account's connection and, with a
// test mail, posts it.
func (s *Outbound) checkGraph(ctx context.Context, acc domain.OutboundAccount, raw []byte) (CheckReply, error) {
	if raw == nil {
		if acc.OAuthConnectionID == "" {
			return CheckReply{}, &graphsend.Error{Stage: graphsend.StageSettings,
				Reply: "graph accounts send through an OAuth connection; name one (oauth_connection_id)"}
		}
		if _, err := s.tokenSource(acc.OAuthConnectionID, domain.ProtocolGraph)(ctx); err != nil {
			return CheckReply{}, &graphsend.Error{Stage: graphsend.StageSettings, Reply: "access token: " + err.Error(), Err: err}
		}
		return CheckReply{}, nil
	}
	p, f := s.prepareGraph(ctx, prepared{account: acc, raw: raw})
	if f != nil {
		return CheckReply{}, &graphsend.Error{Stage: f.stage, Reply: f.reply}
	}
	reply, err := p.send(ctx)
	if err != nil {
		return CheckReply{}, err
	}
	return CheckReply{TestMailSent: true, Reply: reply}, nil
}

// testMail builds the check's test mail from the account's sender to to.
func testMail(acc domain.OutboundAccount, settings domain.Settings, to string, now time.Time) ([]byte, error) {
	raw, err := smtpsend.Build(smtpsend.Message{
		From:      smtpsend.Address{Name: acc.SenderName, Email: acc.SenderAddress},
		To:        []smtpsend.Address{{Email: to}},
		Subject:   "ledgerdesk: test mail of the outgoing account " + acc.Name,
		MessageID: checkMessageID(settings), Date: now, Automatic: true, Encoding: acc.BodyEncoding,
		Body: "This mail was sent by ledgerdesk to check the outgoing account \"" + acc.Name + "\" (" +
			acc.SenderAddress + "). If it reached you, the account can send.\n",
	})
	if err != nil {
		return nil, &smtpsend.Error{Stage: smtpsend.StageSettings, Reply: err.Error(), Err: err}
	}
	return raw, nil
}

// checkMessageID is a Message-ID of its own for every test mail; it is no
// ticket's and never verifies as ours.
func checkMessageID(settings domain.Settings) string {
	host := settings.MessageIDDomain
	if host == "" {
		host = "ledgerdesk.invalid"
	}
	return "check-" + rand.Text() + "@" + host
}
