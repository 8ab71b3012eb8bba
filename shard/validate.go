package shard

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

const (
	limitStream      = "1..512 bytes of UTF-8, no control characters, not starting with '$'"
	limitType        = "1..256 bytes of UTF-8, no control characters"
	limitContentType = "0..128 bytes of UTF-8, no control characters"
	limitEvents      = "1..10000 events"
	limitEventSize   = "4 MiB of data+metadata per event"
	limitAppendSize  = "16 MiB of data+metadata per append"
	limitID          = "non-zero UUID, unique within the append"
)

// CheckStreamName returns an *InvalidError (field "stream") if name is not
// a valid stream name.
func CheckStreamName(name string) error {
	switch {
	case name == "":
		return invalid("stream", limitStream, "empty")
	case len(name) > MaxStreamNameLen:
		return invalid("stream", limitStream, "too long (%d bytes)", len(name))
	case name[0] == '$':
		return invalid("stream", limitStream, "starts with '$' (reserved for system streams)")
	}
	return checkText("stream", limitStream, name)
}

// checkText rejects invalid UTF-8 and control characters.
func checkText(field, limit, s string) error {
	if reason := textProblem(s); reason != "" {
		return invalid(field, limit, "%s", reason)
	}
	return nil
}

// textProblem describes the first invalid UTF-8 sequence or control character of s, or returns
// "" when there is none. It allocates only when it finds one, so that validating the events of
// an append costs no allocation per event.
func textProblem(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return fmt.Sprintf("invalid UTF-8 at byte %d", i)
			}
		}
		if unicode.IsControl(r) {
			return fmt.Sprintf("control character %U at byte %d", r, i)
		}
	}
	return ""
}

func checkExpectedKind(e Expected) error {
	if e.Kind > ExpectExact {
		return invalid("expected.kind", "any, no-stream, exists or exact", "unknown kind %d", uint8(e.Kind))
	}
	return nil
}

// ValidateAppend checks c against the limits in this package and returns an
// *InvalidError naming the first offending field and its limit.
func ValidateAppend(c *AppendCommand) error {
	if err := CheckStreamName(c.Stream); err != nil {
		return err
	}
	if err := checkExpectedKind(c.Expected); err != nil {
		return err
	}
	if len(c.Events) == 0 {
		return invalid("events", limitEvents, "no events")
	}
	if len(c.Events) > MaxEventsPerAppend {
		return invalid("events", limitEvents, "too many events (%d)", len(c.Events))
	}
	total := 0
	var seen map[[16]byte]int
	if len(c.Events) > 1 {
		seen = make(map[[16]byte]int, len(c.Events))
	}
	for i := range c.Events {
		e := &c.Events[i]
		f := func(name string) string { return fmt.Sprintf("events[%d].%s", i, name) }
		if e.ID == ([16]byte{}) {
			return invalid(f("id"), limitID, "zero UUID")
		}
		if seen != nil {
			if j, dup := seen[e.ID]; dup {
				return invalid(f("id"), limitID, "duplicate of events[%d].id", j)
			}
			seen[e.ID] = i
		}
		switch {
		case e.Type == "":
			return invalid(f("type"), limitType, "empty")
		case len(e.Type) > MaxEventTypeLen:
			return invalid(f("type"), limitType, "too long (%d bytes)", len(e.Type))
		}
		if reason := textProblem(e.Type); reason != "" {
			return invalid(f("type"), limitType, "%s", reason)
		}
		if len(e.ContentType) > MaxContentTypeLen {
			return invalid(f("content_type"), limitContentType, "too long (%d bytes)", len(e.ContentType))
		}
		if reason := textProblem(e.ContentType); reason != "" {
			return invalid(f("content_type"), limitContentType, "%s", reason)
		}
		size := len(e.Data) + len(e.Metadata)
		if size > MaxEventSize {
			return invalid(f("data+metadata"), limitEventSize, "too large (%d bytes)", size)
		}
		total += size
	}
	if total > MaxAppendSize {
		return invalid("events", limitAppendSize, "too large (%d bytes)", total)
	}
	return nil
}

// ValidateDelete checks c and returns an *InvalidError. ExpectNoStream is
// invalid for a delete.
func ValidateDelete(c *DeleteCommand) error {
	return checkStreamExpected(c.Stream, c.Expected, "delete")
}

// ValidateTruncate checks c as ValidateDelete checks a delete: a valid stream
// name and an expected version other than no-stream. Every Before is valid
// (Apply caps it).
func ValidateTruncate(c *TruncateCommand) error {
	return checkStreamExpected(c.Stream, c.Expected, "truncate")
}

// checkStreamExpected checks the stream and expected version of a command on an existing stream.
func checkStreamExpected(stream string, exp Expected, what string) error {
	if err := CheckStreamName(stream); err != nil {
		return err
	}
	if err := checkExpectedKind(exp); err != nil {
		return err
	}
	if exp.Kind == ExpectNoStream {
		return invalid("expected.kind", "any, exists or exact for a "+what, "no-stream")
	}
	return nil
}
