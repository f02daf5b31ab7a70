package vehicleid

import "testing"

func TestIsNumeric(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		want bool
	}{
		{"1492931337156091", true},
		{"12345678901", true},
		{"9223372036854775807", true},
		{"9223372036854775808", false}, // above int64
		{"99999999999999999999", false},
		{"0", false},
		{"0149293133715609", false},
		{"12345678901234567", false}, // VIN length
		{"5YJ3E1EA1KF000001", false},
		{"", false},
		{"12a4", false},
		{"-1", false},
	} {
		if got := IsNumeric(tc.tag); got != tc.want {
			t.Errorf("IsNumeric(%q) = %v, want %v", tc.tag, got, tc.want)
		}
	}
}
