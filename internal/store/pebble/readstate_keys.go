// Keys and values of the read state: conversation lists, read positions,
// the read-receipt index, hidden messages, settings and delivered marks.
//
// Invariants (kept by the writer, readstate.go):
//   - cl/<user>\x00<conv> holds user's conversation entry (a marshalled
//     pimv1.Conversation without last_message); cx/<user>\x00<seq> indexes
//     it by Version and by Activity: one key with role "both" when they are
//     equal (a message was the last change: one index write per message),
//     else one "activity" key and one "version" key. No other cx/ key
//     points at the entry.
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

// convIndexPrefix is cx/<user>\x00: the index of a user's entries by
// version and by activity, both user seqs.
func convIndexPrefix(user string) []byte { return append(append([]byte("cx/"), user...), 0) }

func convIndexKey(user string, seq uint64) []byte { return appendBE8(convIndexPrefix(user), seq) }

// Roles of a cx/ key (the first byte of its value; the conv follows): the
// entry's Activity and Version are equal (both), or it has one key for each.
const (
	roleBoth     = 'b'
	roleActivity = 'a'
	roleVersion  = 'v'
)

func encodeIndexValue(role byte, conv string) []byte { return append([]byte{role}, conv...) }

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
