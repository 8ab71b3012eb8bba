package node

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// How the console shows an event's fields: IDs, times, and data and metadata, which may be
// JSON, other text, or bytes, and come from anyone who could append.

// eventID is a 16-byte ID as a UUID, other lengths in hex.
func eventID(id []byte) string {
	if u, err := uuid.FromBytes(id); err == nil {
		return u.String()
	}
	return hex.EncodeToString(id)
}

// eventTime is a commit time in UTC to the millisecond, "-" when none.
func eventTime(unixNano int64) string {
	if unixNano == 0 {
		return "-"
	}
	return time.Unix(0, unixNano).UTC().Format("2006-01-02 15:04:05.000")
}

// consoleData is an event's data or metadata as its page shows it.
type consoleData struct {
	Kind      string // "JSON", "text", "binary (hex)" or "empty"
	Text      string
	Size      int // bytes in all
	Shown     int // bytes shown
	Truncated bool
}

// showData renders b: JSON indented (unless nested deeper than consoleMaxJSONDepth, whose
// indentation would outgrow the data many times over), other UTF-8 text as it is, anything
// else as a hex dump; the first consoleMaxShown bytes of it.
func showData(b []byte) consoleData {
	d := consoleData{Size: len(b), Kind: "empty"}
	if len(b) == 0 {
		return d
	}
	shown := b
	if len(b) > consoleMaxShown {
		shown, d.Truncated = b[:consoleMaxShown], true
		if t, ok := textPrefix(shown); ok {
			shown = t
		}
	}
	d.Shown = len(shown)
	var ind bytes.Buffer
	switch {
	case !d.Truncated && jsonDepth(b) <= consoleMaxJSONDepth && json.Indent(&ind, b, "", "  ") == nil:
		d.Kind, d.Text = "JSON", visible(ind.String())
	case isText(shown):
		d.Kind, d.Text = "text", visible(string(shown))
	default:
		d.Kind, d.Text = "binary (hex)", hex.Dump(shown)
	}
	return d
}

// textPrefix cuts b back to whole UTF-8 characters, when the cut split one.
func textPrefix(b []byte) ([]byte, bool) {
	for i := 0; i < utf8.UTFMax && i < len(b); i++ {
		if utf8.Valid(b[:len(b)-i]) {
			return b[:len(b)-i], true
		}
	}
	return b, false
}

// jsonDepth is how deep b's arrays and objects nest, if b is JSON.
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped, inString = c == '\\', c != '"'
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

// visible writes the characters that reorder text (Unicode's bidirectional controls, such as
// U+202E) as escapes: shown as they are, they would make text after them read otherwise.
func visible(s string) string {
	if !strings.ContainsFunc(s, isBidiControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isBidiControl(r) {
			fmt.Fprintf(&b, "\\u%04x", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isBidiControl(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }

// isText: valid UTF-8 without control characters other than tabs and line breaks.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

// preview is the start of b on one line: text with its spaces folded, or the first bytes in hex.
func preview(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	head := b[:min(len(b), 4*consolePreviewRunes)]
	if t, ok := textPrefix(head); ok && isText(t) {
		s := visible(strings.Join(strings.Fields(string(t)), " "))
		if utf8.RuneCountInString(s) > consolePreviewRunes {
			s = string([]rune(s)[:consolePreviewRunes])
		} else if len(head) == len(b) {
			return s
		}
		return s + "…"
	}
	s := hex.EncodeToString(b[:min(len(b), 16)])
	if len(b) > 16 {
		s += "…"
	}
	return "binary: " + s
}
