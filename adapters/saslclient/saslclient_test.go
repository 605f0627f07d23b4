package saslclient_test

import (
	"errors"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/saslclient"
)

// step is one challenge of an exchange and the answer expected to it.
type step struct {
	challenge string
	want      string // the response; ignored when wantErr
	wantErr   bool   // an ErrUnexpectedChallenge
}

func TestClients(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		client   sasl.Client
		wantMech string
		wantIR   []byte // nil: no initial response
		steps    []step
	}{
		{name: "XOAUTH2 sends the user and token as its initial response, user name as typed",
			client:   saslclient.NewXOAUTH2Client(`DOMAIN\user\shared`, "tok"),
			wantMech: "XOAUTH2", wantIR: []byte("user=DOMAIN\\user\\shared\x01auth=Bearer tok\x01\x01")},
		{name: "XOAUTH2 answers the server's JSON error with an empty response",
			client:   saslclient.NewXOAUTH2Client("u", "t"),
			wantMech: "XOAUTH2", wantIR: []byte("user=u\x01auth=Bearer t\x01\x01"),
			steps: []step{{challenge: `{"status":"401","schemes":"bearer"}`, want: ""}}},
		{name: "CRAM-MD5 answers RFC 2195 section 2's example",
			client:   saslclient.NewCRAMMD5Client("tim", "tanstaaftanstaaf"),
			wantMech: "CRAM-MD5",
			steps: []step{{challenge: "<1896.697170952@postoffice.reston.mci.net>",
				want: "tim b913a602c7eda7a495b4e6e7334d3890"}}},
		{name: "CRAM-MD5 refuses a second challenge",
			client:   saslclient.NewCRAMMD5Client("tim", "tanstaaftanstaaf"),
			wantMech: "CRAM-MD5",
			steps: []step{{challenge: "<1896.697170952@postoffice.reston.mci.net>",
				want: "tim b913a602c7eda7a495b4e6e7334d3890"},
				{challenge: "<1897.697170953@postoffice.reston.mci.net>", wantErr: true}}},
		{name: "LOGIN answers Username: and Password: by their text",
			client:   saslclient.NewLoginClient("bob", "Grüße"),
			wantMech: "LOGIN",
			steps:    []step{{challenge: "Username:", want: "bob"}, {challenge: "Password:", want: "Grüße"}}},
		{name: "LOGIN accepts any letter case and the password asked first",
			client:   saslclient.NewLoginClient("bob", "pw"),
			wantMech: "LOGIN",
			steps:    []step{{challenge: "PASSWORD:", want: "pw"}, {challenge: " user name ", want: "bob"}}},
		{name: "LOGIN refuses a challenge it cannot read",
			client:   saslclient.NewLoginClient("bob", "pw"),
			wantMech: "LOGIN",
			steps:    []step{{challenge: "Realm:", wantErr: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mech, ir, err := tc.client.Start()
			if err != nil {
				t.Fatalf("Start() error = %v", err)
			}
			if mech != tc.wantMech {
				t.Errorf("Start() mechanism = %q, want %q", mech, tc.wantMech)
			}
			if diff := cmp.Diff(tc.wantIR, ir); diff != "" {
				t.Errorf("Start() initial response (-want +got):\n%s", diff)
			}
			for _, st := range tc.steps {
				resp, err := tc.client.Next([]byte(st.challenge))
				if st.wantErr {
					if !errors.Is(err, saslclient.ErrUnexpectedChallenge) {
						t.Errorf("Next(%q) = %q, %v; want ErrUnexpectedChallenge", st.challenge, resp, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Next(%q) error = %v", st.challenge, err)
				}
				// An empty answer must be non-nil: go-smtp takes a nil
				// one as the end of the exchange and sends nothing.
				if resp == nil || string(resp) != st.want {
					t.Errorf("Next(%q) = %q (nil: %t), want %q", st.challenge, resp, resp == nil, st.want)
				}
			}
		})
	}
}
