// Package mimeparse turns the raw bytes of one mail (RFC 5322, MIME RFC
// 2045-2049) into a Summary: the envelope fields, the text and HTML body and
// the list of attachments that the domain's MailReceived event carries. The
// raw bytes themselves are kept in the blob store (adapters/blobstore) and
// only referenced; attachments are located by their IMAP-style PartPath.
//
// # Streaming and limits
//
// Parse reads the mail once, as a stream, hashing it on the way (Summary.SHA256
// is the blob store address). Memory does not grow with the mail: each
// multipart level has a fixed read buffer, attachment bodies are decoded and
// counted but never kept, and the text and HTML bodies are kept up to
// Limits.MaxBodyBytes each. A 50 MB mail with a 50 MB attachment allocates
// about 64 KiB in total (BenchmarkParse50MB). Against MIME bombs every mail
// is held to Limits (defaults in DefaultLimits):
//
//   - MaxDepth: nesting of multiparts and message/rfc822 parts;
//   - MaxParts: number of MIME entities at all levels;
//   - MaxHeaderBytes and MaxPartHeaderBytes: size of the top-level header and
//     of every part header, including forwarded messages' headers (go-message
//     caps only the top-level one, so part headers are read here);
//   - MaxDecodedBytes: the sum of all decoded part sizes.
//
// Exceeding one of these makes Parse fail with a *ParseError whose Limit is
// true. MaxBodyBytes only truncates, with a warning.
//
// # Failures
//
// A *ParseError means the mail cannot be imported: its input has no header
// fields at all, or none of the fields every mail has (From, To, Subject,
// Date, Message-ID, Received, Content-Type, ...), so it is not a mail; or it
// breaks a limit. Its Reason becomes the MailFailed reason. A read error of
// the caller's reader is returned wrapped, not as a *ParseError: the mail was
// not at fault. Parse never panics; FuzzParse checks that.
//
// # Repairs
//
// Everything else is repaired where a mail client would still show the mail,
// and each repair is listed in Summary.Warnings:
//
//   - Header block: a UTF-8 byte order mark, an mbox "From " line and blank
//     lines before the header
//     are skipped; lines that are neither a field nor a continuation (e.g. a
//     "---- Original message ----" line, or a broken Received continuation)
//     are dropped; white space before the colon is accepted; LF line ends
//     work like CRLF.
//   - Folding: each fold, with the white space around it, reads as one
//     space (what clients show: "Die Hasen und" folded onto "   die
//     Frösche" is "Die Hasen und die Frösche"), except inside raw
//     ISO-2022-JP text, where a fold in a JIS run is no text.
//   - Raw 8-bit bytes in headers: valid UTF-8 is kept (RFC 6532); inside
//     a Q encoded word they are the word's own charset and decoded once, in
//     it; raw ISO-2022-JP (escape sequences) is decoded as such; anything
//     else is decoded with the charset the mail declares for its first
//     text part (the header is read again once the walk has found it, and
//     so are part headers read before it), else windows-1252. Two guesses
//     come before a single-byte declared charset and windows-1252:
//     GB18030 when the 8-bit bytes come in pairs (Chinese), Shift_JIS when
//     that gives kana (Japanese). File names follow the same rule.
//   - Encoded words (RFC 2047): decoded also when they touch other text or sit
//     inside quotes, adjacent words are joined before decoding (a character
//     or an ISO-2022-JP escape state split across two words survives, in
//     subjects and in display names), white space between adjacent words
//     is dropped (section 6.2), B words with wrong padding are read, a
//     language suffix (RFC 2231 section 5) is ignored, and bytes that are
//     not valid in the declared charset are guessed (Shift_JIS and EUC-JP
//     first when labelled ISO-2022-JP). A word that cannot be decoded stays
//     as written.
//   - Charsets: every charset of golang.org/x/text through go-message's
//     charset package (IANA and WHATWG labels: ks_c_5601-1987, x-gbk,
//     iso-8859-8-i, windows-1258, utf8, latin1, cp1252, ...), plus UTF-7
//     (RFC 2152, also unicode-1-1-utf-7; decodeUTF7), the Mac OS code pages
//     x-mac-ce, -greek, -turkish, -icelandic, -croatian and -romanian
//     (maccharsets.go), cp874, cp949 and cp950, and the Windows code page
//     numbers Outlook writes (cp65001, cp28592, win-1251, cp10029, ...;
//     see normCharset). RFC 2231 parameter values are decoded in the
//     charset they name, raw 8-bit bytes in them included; one that names
//     none is read like raw header bytes. ISO-8859-1 and US-ASCII are
//     read as windows-1252 and GB2312/GBK as GB18030 (their supersets, as
//     mail clients do). An unknown charset is a warning, never a failure:
//     the text is guessed.
//   - Addresses: net/mail first; when it refuses the list, a forgiving reader
//     splits at commas outside quotes, brackets and comments, joins an
//     unquoted "Doe, John <j@example.com>" back together, takes the address
//     from <...> or from the word with an @, and the rest as display name.
//     Comments are dropped from the address, the last one naming the
//     sender when nothing else does ("MAILER-DAEMON@host (Mail Delivery
//     System)"); group names and empty groups, source routes and white
//     space inside an obsolete addr-spec are dropped (RFC 5322 sections 3.4
//     and 4.4). It decodes encoded words in each display name after
//     reading the structure, never in an address (RFC 2047 section 5). A
//     quoted local part keeps its quotes. Without a usable From, the sender is taken from
//     Sender, Reply-To or Return-Path, in that order.
//   - Message-ID: angle brackets are optional, white space from folding is
//     removed. A mail without one (or with an empty one) gets
//     "gen-<hex sha256 of the raw bytes>@ledgerdesk.invalid", so the same
//     bytes always get the same id and redelivery is recognised.
//   - Date: RFC 5322 and the obsolete forms net/mail accepts; a date glued to
//     the next header ("+0200Received: ...") is cut out; asctime and ISO
//     layouts are accepted. An unreadable Date leaves Summary.Date zero.
//   - MIME structure: a missing MIME-Version does not stop Content-Type from
//     being honoured; an unreadable Content-Type is text/plain (RFC 2045
//     section 5.2); a multipart without boundary is read as text; a multipart
//     whose boundary never appears shows its text as the body; a multipart
//     that ends without its close delimiter keeps the parts read so far; a
//     part whose first line is not a header field has an empty header and
//     that line starts its body; garbage in a transfer encoding ends that
//     part with what could be decoded.
//   - Transfer encodings: misspellings mean what they say ("quoted
//     printable", "7-bit", "8bits", a trailing ";"), x-uuencode is decoded
//     (with or without its begin line), and an unknown encoding leaves the
//     bytes as they are.
//
// # Bounds
//
// Every text of a Summary can be stored in an (indexed) SQL text column:
// none holds a NUL or invalid UTF-8, and the one-line fields (subject,
// names, ids, media types, file names) hold no control character at all.
//
//   - An address with a control character, or longer than RFC 5321 section
//     4.5.3.1 allows (local part 64, domain 255, address 254 bytes), is no
//     address: it is left out of its list with a warning. When it was the
//     only sender and no fallback has one, From has no Email and its Name
//     shows the header as written, cut to 998 bytes.
//   - Display names, Message-IDs, In-Reply-To, References, Content-IDs and
//     the automatic-mail headers are one line of at most 998 bytes (RFC 5322
//     section 2.1.1); an id beyond that, or with a control character, is no
//     id. References keeps its first and its last 99 ids.
//   - The subject is cut at 4 KiB, file names at 255 bytes (keeping the
//     extension), media types beyond 255 bytes are unreadable.
//   - A NUL in a body becomes U+FFFD.
//
// # Bodies and attachments
//
// A text/plain or text/html part is body unless it is
// Content-Disposition: attachment or has a file name. multipart/alternative
// contributes its first plain text and its last HTML (RFC 2046 section
// 5.1.4); other multiparts concatenate their parts, so a text part followed
// by an HTML signature gives both (the text rendered as HTML in HTMLBody,
// the HTML rendered as text in TextBody). A mail with HTML only gets its
// TextBody from the HTML (tags dropped, blocks and <br> as line breaks).
// Line ends in bodies are LF; format=flowed text (RFC 3676) is joined at its
// soft line breaks; an HTML part without a charset parameter is read in the
// charset its <meta> tag declares. HTMLBody is not sanitised here.
//
// Every other leaf part is an Attachment with its decoded size. Inline is
// set for Content-Disposition: inline and for parts whose Content-ID the
// HTML references (cid:, RFC 2392); whether inline images are shown in the
// body or as attachments (images_as_attachments, recorded on the mail's
// MailReceived) is decided when rendering (api/bodies.go).
//
// A forwarded mail (message/rfc822, message/global) is listed as one
// attachment, "<its subject>.eml", sized by its bytes; its own attachments
// are listed too, with part paths below it (2.1, 2.2, ...); its text stays in
// the .eml and is not merged into the body. Inside multipart/report (RFC
// 6522) the message/rfc822 or text/rfc822-headers part gives
// BouncedMessageID, and ReportType holds the report-type parameter
// ("delivery-status" for RFC 3464 bounces).
//
// Part paths follow IMAP (RFC 3501 section 6.4.5): the parts of a top-level
// multipart are 1, 2, ...; a single-part mail's body is 1; the body parts of
// a message/rfc822 at path P are P.1, P.2, ... (or P.1 when it is single
// part).
//
// # Checked against an independent decoder
//
// TestParse_AgreesWithPython reads every mail of ../shared/corpus and of a
// generated charset set (charsets_test.go) with Python's email package
// (Debian's python3, policy=default; testdata/pyheaders.py) and compares
// subject, sender, recipients and attachment names. Each disagreement is
// listed in pythonAllowList with the RFC reason ledgerdesk's answer is the
// better one; any other fails the test.
package mimeparse
