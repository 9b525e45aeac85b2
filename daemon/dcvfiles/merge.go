package dcvfiles

import (
	"slices"
	"sort"
	"strings"

	"github.com/dcvd/dcvd/httpchallenge"
)

// MergeWritten adds ws to have, one entry per web root and name. The
// directories created are the union of both entries': two writes of one
// file at once may each have created one of them.
func MergeWritten(have, ws []httpchallenge.Written) []httpchallenge.Written {
	for _, w := range ws {
		found := false
		for i, h := range have {
			if h.Webroot == w.Webroot && h.Name == w.Name {
				found = true
				dirs := slices.Clone(h.CreatedDirs)
				for _, d := range w.CreatedDirs {
					if !slices.Contains(dirs, d) {
						dirs = append(dirs, d)
					}
				}
				// Deepest first, as Remove expects.
				sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
				if len(dirs) == 0 {
					dirs = nil
				}
				have[i].CreatedDirs = dirs
			}
		}
		if !found {
			have = append(have, w)
		}
	}
	sort.Slice(have, func(i, j int) bool {
		if have[i].Webroot != have[j].Webroot {
			return have[i].Webroot < have[j].Webroot
		}
		return have[i].Name < have[j].Name
	})
	return have
}
