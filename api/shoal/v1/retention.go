package shoalv1

import (
	"fmt"
	"strings"
	"time"
)

// Describe says what p removes, as people read it ("keep the last 100, remove what deletes
// hid"), without its prefix: the words `shoal retention` and the console show.
func (p *RetentionPolicy) Describe() string {
	var parts []string
	if p.GetKeepLast() > 0 {
		parts = append(parts, fmt.Sprintf("keep the last %d", p.GetKeepLast()))
	}
	if p.GetMaxAgeMs() > 0 {
		parts = append(parts, "remove older than "+(time.Duration(p.GetMaxAgeMs())*time.Millisecond).String())
	}
	if p.GetDeleted() {
		parts = append(parts, "remove what deletes hid")
	}
	return strings.Join(parts, ", ")
}
