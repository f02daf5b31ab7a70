package fleetsim

import (
	"fmt"
	"strings"
)

// vinYears are the model-year characters (position 10) a VIN may use, in order.
const vinYears = "ABCDEFGHJKLMNPRSTVWXY123456789"

// NewTestVIN returns a valid 17-character Tesla-style VIN (correct check digit) that is distinct
// for every i in [0, 30_000_000). Negative i is treated as its absolute value. The VINs are
// invented: they look like Model 3s built in Fremont.
func NewTestVIN(i int) string {
	if i < 0 {
		i = -i
	}
	serial := i % 1_000_000
	year := vinYears[(i/1_000_000)%len(vinYears)]
	// Positions: WMI 5YJ, VDS 3E1EA, check digit, model year, plant F, serial.
	vin := []byte(fmt.Sprintf("5YJ3E1EA0%cF%06d", year, serial))
	vin[8] = vinCheckDigit(vin)
	return string(vin)
}

// vinCheckDigit computes position 9 of a VIN (ISO 3779 / 49 CFR 565).
func vinCheckDigit(vin []byte) byte {
	weights := [17]int{8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2}
	sum := 0
	for i, c := range vin {
		sum += vinValue(c) * weights[i]
	}
	if r := sum % 11; r != 10 {
		return byte('0' + r)
	}
	return 'X'
}

// vinValue is the transliteration of one VIN character.
func vinValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'H':
		return int(c-'A') + 1
	case c >= 'J' && c <= 'N':
		return int(c-'J') + 1
	case c == 'P':
		return 7
	case c == 'R':
		return 9
	case c >= 'S' && c <= 'Z':
		return int(c-'S') + 2
	default:
		return 0
	}
}

// ValidVIN reports whether vin is 17 characters of the VIN alphabet (no I, O or Q) with a correct
// check digit.
func ValidVIN(vin string) bool {
	if len(vin) != 17 {
		return false
	}
	for i := 0; i < len(vin); i++ {
		c := vin[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') || c == 'I' || c == 'O' || c == 'Q' {
			return false
		}
	}
	return vinCheckDigit([]byte(vin)) == vin[8]
}

// PlausibleVIN reports whether vin is 17 upper-case letters and digits, as the Fleet API's
// paths take it (ValidVIN also checks the alphabet and the check digit).
func PlausibleVIN(vin string) bool {
	return len(vin) == 17 && !strings.ContainsFunc(vin, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z') })
}
