package config

import (
	"fmt"
	"strings"
)

// expand returns s with every ${NAME} replaced by getenv(NAME) and every $${ by a
// literal ${. Values from the environment are not expanded again. subst reports
// whether a variable was substituted. errs holds one message per bad or unset
// reference; the messages quote only what is written in s, never a value of getenv.
func expand(s string, getenv func(string) string) (out string, subst bool, errs []string) {
	if !strings.Contains(s, "${") {
		return s, false, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, "unterminated ${ (write $${ for a literal ${)")
				return "", false, errs
			}
			name := s[i+2 : i+2+end]
			ref := s[i : i+3+end]
			i += 3 + end
			if !isVarName(name) {
				errs = append(errs, fmt.Sprintf("bad variable reference %q: want ${NAME} with letters, digits and _ (write $${ for a literal ${)", ref))
				continue
			}
			v := getenv(name)
			if v == "" {
				errs = append(errs, fmt.Sprintf("${%s} is not set", name))
				continue
			}
			b.WriteString(v)
			subst = true
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	if len(errs) > 0 {
		return "", false, errs
	}
	return b.String(), subst, nil
}

func isVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
