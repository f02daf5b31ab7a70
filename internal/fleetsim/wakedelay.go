package fleetsim

import (
	"time"
)

// SetWakeDelay makes the vehicle take d to come online after a wake_up, as a real car does (10 to
// 30 s): until then wake_up and the vehicle list show it "asleep" and signed_command answers 408.
// Zero (the default) wakes it at once.
func (s *Server) SetWakeDelay(vin string, d time.Duration) {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	if s.wakeDelays == nil {
		s.wakeDelays = make(map[string]time.Duration)
		s.waking = make(map[string]bool)
	}
	s.wakeDelays[vin] = d
}

// wake wakes v now, or after its wake delay. A wake already under way is not restarted.
func (s *Server) wake(v *Vehicle) {
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	d := s.wakeDelays[v.vin]
	if d <= 0 {
		v.SetAsleep(false)
		return
	}
	if s.waking[v.vin] {
		return
	}
	s.waking[v.vin] = true
	time.AfterFunc(d, func() {
		s.wakeMu.Lock()
		defer s.wakeMu.Unlock()
		v.SetAsleep(false)
		delete(s.waking, v.vin)
	})
}
