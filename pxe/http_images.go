package pxe

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe/catalog"
)

// AddImage is the body of POST /api/images: an image to publish while the
// server runs. Paths are absolute paths on the image host, inside one of
// the server's image folders (HTTPConfig.ImageDirs, http.image_dirs).
type AddImage struct {
	// Name of the image; default: the one source's file name without its
	// extension, or the torrent's name.
	Name string `json:"name,omitempty"`
	// Torrent made with `pxeswarm mktorrent`. Empty: the server makes one
	// from the one raw source, hashing it all before it answers.
	Torrent string `json:"torrent,omitempty"`
	// Source files or block devices, one per image part, in order.
	Source []string `json:"source"`
}

// maxAddSources bounds the parts of an image added through the API.
const maxAddSources = 64

// ImageStatus is one published image in Status and GET /api/images.
type ImageStatus struct {
	Name     string `json:"name"`
	InfoHash string `json:"info_hash"`
	Size     int64  `json:"size"`
	Torrent  string `json:"torrent"`
	WebSeed  bool   `json:"web_seed"`
}

func (s *bootServer) imageStatus(im *catalog.Image) ImageStatus {
	return ImageStatus{Name: im.Name, InfoHash: im.Image.InfoHash.HexString(), Size: im.Image.Length,
		Torrent: s.torrentURL(im.Name), WebSeed: s.webSeeded(im)}
}

// imageStatuses lists the catalog by name.
func (s *bootServer) imageStatuses() []ImageStatus {
	ret := []ImageStatus{}
	for _, im := range s.cat.List() {
		ret = append(ret, s.imageStatus(im))
	}
	slices.SortFunc(ret, func(a, b ImageStatus) int { return strings.Compare(a.Name, b.Name) })
	return ret
}

// serveImages answers GET /api/images.
func (s *bootServer) serveImages(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.imageStatuses())
}

// serveAddImage answers POST /api/images (admin). The image is published
// (tracker, seeder, torrent URL) when it answers 201; on any error nothing
// is.
func (s *bootServer) serveAddImage(w http.ResponseWriter, r *http.Request) {
	if len(s.cfg.ImageDirs) == 0 {
		writeError(w, http.StatusForbidden, errors.New("publishing images through the API is off: list the folders it may publish from in http.image_dirs of the site config (or --image-dir)"))
		return
	}
	var req AddImage
	if !decodeJSON(w, r, s.cfg.MaxBody, &req) {
		return
	}
	spec, err := s.imageSpec(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	im, err := s.cat.Add(r.Context(), spec)
	if err != nil {
		s.imageError(w, "adding the image", err)
		return
	}
	s.log.Info("http: image added by admin", "image", im.Name, "info_hash", im.Image.InfoHash.HexString(), "client", remoteIP(r))
	writeJSON(w, http.StatusCreated, s.imageStatus(im))
}

// serveRemoveImage answers DELETE /api/images/{name}[?force=true] (admin).
func (s *bootServer) serveRemoveImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !catalog.ValidName(name) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no image %q on this server: see GET /api/images", protocol.Clip(name, 60)))
		return
	}
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("force=%q: want true or false", protocol.Clip(v, 10)))
			return
		}
	}
	im, err := s.cat.Remove(name, force)
	if err != nil {
		s.imageError(w, "removing the image", err)
		return
	}
	s.log.Info("http: image removed by admin", "image", im.Name, "info_hash", im.Image.InfoHash.HexString(), "force", force, "client", remoteIP(r))
	writeJSON(w, http.StatusOK, s.imageStatus(im))
}

// imageError answers a catalog error.
func (s *bootServer) imageError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, catalog.ErrBadImage):
		writeError(w, http.StatusBadRequest, err)
	case errors.Is(err, catalog.ErrExists), errors.Is(err, catalog.ErrInUse):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, catalog.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	default:
		// A seeder that could not start, a torrent that could not be
		// written: the admin can act on the message.
		s.log.Error("http: "+what, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("%s: %w", what, err))
	}
}

// imageSpec turns the request into a catalog spec whose paths are checked
// (imagePath) and resolved, so a symbolic link changed afterwards does not
// lead elsewhere.
func (s *bootServer) imageSpec(req AddImage) (catalog.Spec, error) {
	if len(req.Source) == 0 {
		return catalog.Spec{}, errors.New("source: list the image's source file(s), one per part, in order")
	}
	if len(req.Source) > maxAddSources {
		return catalog.Spec{}, fmt.Errorf("source: %d files; an image has at most %d parts", len(req.Source), maxAddSources)
	}
	spec := catalog.Spec{Name: req.Name}
	if req.Torrent != "" {
		p, err := s.imagePath("torrent", req.Torrent)
		if err != nil {
			return catalog.Spec{}, err
		}
		spec.Torrent = p
	}
	for i, src := range req.Source {
		p, err := s.imagePath(fmt.Sprintf("source[%d]", i), src)
		if err != nil {
			return catalog.Spec{}, err
		}
		spec.Source = append(spec.Source, p)
	}
	return spec, nil
}

// imagePath checks that p is an absolute path inside one of ImageDirs,
// before and after resolving symbolic links, and returns it resolved. A
// path outside them is refused before the file system is asked about it,
// so the route does not tell whether a file exists elsewhere.
func (s *bootServer) imagePath(key, p string) (string, error) {
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%s %q: give an absolute path on the image host", key, protocol.Clip(p, 200))
	}
	var dirs, resolved []string
	for _, d := range s.cfg.ImageDirs {
		dirs = append(dirs, filepath.Clean(d))
		if r, err := filepath.EvalSymlinks(d); err == nil {
			dirs, resolved = append(dirs, r), append(resolved, r)
		}
	}
	outside := fmt.Errorf("%s %q is not inside the server's image folders (%s): put it there, or add its folder to http.image_dirs",
		key, protocol.Clip(p, 200), strings.Join(s.cfg.ImageDirs, ", "))
	if !inside(dirs, filepath.Clean(p)) {
		return "", outside
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%s %q: no such file on the image host: check the path", key, protocol.Clip(p, 200))
	}
	if !inside(resolved, real) {
		return "", outside
	}
	return real, nil
}

// inside reports whether p lies below one of dirs.
func inside(dirs []string, p string) bool {
	for _, d := range dirs {
		if rel, err := filepath.Rel(d, p); err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}
