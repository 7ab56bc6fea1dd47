// Keys and values of the read state: conversation lists, read positions,
// the read-receipt index, hidden messages, settings and delivered marks.
//
// Invariants (kept by the writer, readstate.go):
//   - cl/<user>\x00<conv> holds user's conversation entry (a marshalled
//     pimv1.Conversation without last_message); cv/<user>\x00<version> and
//     ca/<user>\x00<activity> index it, exactly one key each per entry,
//     pointing at the entry's current Version and Activity.
//   - r/<user>\x00<conv> holds the read position (BE8) and, when the user
//     appears in the receipt index of conv, the position indexed there
//     (BE8); rp/<conv>\x00<pos BE8><user> exists for exactly those.
//   - h/<user>\x00<conv>\x00<seq BE8> marks a message user hid.
//   - s/<user> holds the user's settings (absent: defaults); dv/<user> the
//     highest user seq MarkDelivered processed (or less: see readstate.go);
//     gs/<conv> a group's settings.
package pebblestore

import (
	"encoding/binary"
	"fmt"
)

func convKey(user, conv string) []byte {
	k := append(append([]byte("cl/"), user...), 0)
	return append(k, conv...)
}

// versionPrefix is cv/<user>\x00.
func versionPrefix(user string) []byte { return append(append([]byte("cv/"), user...), 0) }

func versionKey(user string, v uint64) []byte { return appendBE8(versionPrefix(user), v) }

// activityPrefix is ca/<user>\x00.
func activityPrefix(user string) []byte { return append(append([]byte("ca/"), user...), 0) }

func activityKey(user string, a uint64) []byte { return appendBE8(activityPrefix(user), a) }

// receiptPrefix is rp/<conv>\x00.
func receiptPrefix(conv string) []byte { return append(append([]byte("rp/"), conv...), 0) }

func receiptKey(conv string, pos uint64, user string) []byte {
	return append(appendBE8(receiptPrefix(conv), pos), user...)
}

// hiddenPrefix is h/<user>\x00<conv>\x00.
func hiddenPrefix(user, conv string) []byte {
	k := append(append([]byte("h/"), user...), 0)
	return append(append(k, conv...), 0)
}

func hiddenKey(user, conv string, seq uint64) []byte { return appendBE8(hiddenPrefix(user, conv), seq) }

func settingsKey(user string) []byte { return append([]byte("s/"), user...) }

func deliveredKey(user string) []byte { return append([]byte("dv/"), user...) }

// groupSettingsKey is gs/<conv>: the group's settings flags (absent: none).
func groupSettingsKey(conv string) []byte { return append([]byte("gs/"), conv...) }

// Group settings flags.
const groupReceiptsVisible = 1

// encodeReadPos is the r/ value: the read position and the position the
// user has in the receipt index (0: none).
func encodeReadPos(pos, indexed uint64) []byte {
	v := appendBE8(make([]byte, 0, 16), pos)
	if indexed > 0 {
		v = appendBE8(v, indexed)
	}
	return v
}

func decodeReadPos(v []byte) (pos, indexed uint64, err error) {
	switch len(v) {
	case 0:
		return 0, 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), 0, nil
	case 16:
		return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
	}
	return 0, 0, fmt.Errorf("corrupt read position %x", v)
}

// Settings values: one flags byte.
const settingNoReadReceipts = 1

func decodeBE8(v []byte, what string) (uint64, error) {
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, fmt.Errorf("corrupt %s %x", what, v)
}
