/* kvmap.c: a picture of the KV cache (--kv-map, --kv-map-svg).
 *
 * Each event reads the cell metadata through cs_kv_view (one copy of
 * size cells, O(size)) and reduces it to "columns": one per cell, or one
 * per group of consecutive cells when the cache is large. A group shows the
 * most common state of its cells (ties: the lowest state code, i.e. beyond <
 * hole < shared < sequence order), and is marked pending when any of its
 * non-empty cells still owes a K rotation.
 *
 * Text: "[kv-map] <event>: used U/SIZE, holes H, frag F[, pending shift P]"
 * then rows of `width` characters, each prefixed with its first cell index.
 * Rows after the last one that holds a cell below cell_max are omitted. A
 * legend is printed once, before the first map.
 *
 * SVG: the text resolution is kept per event as well, but the SVG uses its
 * own resolution (at most KVMAP_SVG_COLS columns) so that a long run stays
 * readable; runs of equal columns become one rect. Memory: O(events x
 * columns); events beyond KVMAP_MAX_EVENTS are counted but not drawn. */
#include "kvmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

enum {
    KVMAP_DEFAULT_WIDTH = 64,
    KVMAP_MAX_ROWS = 8,       /* text rows per map before cells are grouped */
    KVMAP_SVG_COLS = 512,     /* most columns an SVG row draws */
    KVMAP_MAX_EVENTS = 4096,  /* SVG rows kept */
    KVMAP_LABEL_MAX = 64,     /* event label bytes kept */
    KVMAP_N_LETTERS = 26,     /* sequences drawn as A..Z */
    KVMAP_N_DIGITS = 10,      /* then 0..9 */
    KVMAP_N_PALETTE = 12,     /* SVG colours before they repeat */
    KVMAP_STATE_BEYOND = 0,   /* at or beyond cell_max */
    KVMAP_STATE_HOLE = 1,     /* empty, below cell_max */
    KVMAP_STATE_SHARED = 2,   /* several sequences */
    KVMAP_STATE_SEQ0 = 3,     /* sequence s has code 3 + s */
    KVMAP_PENDING_BIT = 0x80, /* OR-ed into a column code: K-shift pending */
};

/* One recorded event, for the SVG. */
typedef struct kvmap_event {
    char label[KVMAP_LABEL_MAX];
    int32_t size;
    int32_t used;
    int32_t cell_max;
    int32_t holes;
    int32_t pending;
    float frag;
    int32_t n_cols;
    int32_t group; /* cells per column */
    uint8_t *cols; /* n_cols codes */
} kvmap_event;

struct tool_kvmap {
    FILE *text;
    char *svg_path;
    int32_t width;
    bool legend_done;
    cs_kv_cell *cells; /* scratch for cs_kv_view */
    int32_t cells_cap;
    kvmap_event *events;
    int32_t n_events;
    int32_t events_cap;
    int32_t n_dropped; /* events past KVMAP_MAX_EVENTS */
    uint64_t seq_seen; /* bit s: sequence s appeared (for the SVG legend) */
    bool shared_seen;
    bool pending_seen;
    bool failed; /* an allocation failed: the SVG is not written */
};

tool_kvmap *tool_kvmap_new(FILE *text, const char *svg_path, int32_t width) {
    tool_kvmap *m = calloc(1, sizeof(*m));
    if (m == NULL) goto fail;
    m->text = text;
    m->width = width > 0 ? width : KVMAP_DEFAULT_WIDTH;
    if (svg_path != NULL) {
        m->svg_path = strdup(svg_path);
        if (m->svg_path == NULL) goto fail;
    }
    return m;
fail:
    tool_error("kv-map: out of memory");
    free(m);
    return NULL;
}

void tool_kvmap_free(tool_kvmap *m) {
    if (m == NULL) return;
    for (int32_t i = 0; i < m->n_events; i++) free(m->events[i].cols);
    free(m->events);
    free(m->cells);
    free(m->svg_path);
    free(m);
}

/* State code of one cell (without the pending bit). */
static uint8_t kvmap_cell_state(const cs_kv_cell *c, int32_t idx, int32_t cell_max) {
    if (idx >= cell_max) return KVMAP_STATE_BEYOND;
    if (c->pos < 0 || c->seq == 0) return KVMAP_STATE_HOLE;
    if ((c->seq & (c->seq - 1)) != 0) return KVMAP_STATE_SHARED;
    int s = 0;
    while (((c->seq >> s) & 1u) == 0) s++;
    return (uint8_t)(KVMAP_STATE_SEQ0 + s); /* s < 64: fits below the pending bit */
}

/* Reduce cells [0, size) to n_cols columns of `group` cells each. O(size)
 * plus O(states) per column for the majority vote. */
static void kvmap_columns(const cs_kv_cell *cells, int32_t size, int32_t cell_max, int32_t group,
                          int32_t n_cols, uint8_t *out) {
    enum { N_STATES = KVMAP_STATE_SEQ0 + 64 };
    int32_t count[N_STATES];
    for (int32_t c = 0; c < n_cols; c++) {
        const int32_t i0 = c * group;
        const int32_t i1 = i0 + group < size ? i0 + group : size;
        memset(count, 0, sizeof(count));
        bool pending = false;
        for (int32_t i = i0; i < i1; i++) {
            const uint8_t st = kvmap_cell_state(&cells[i], i, cell_max);
            count[st]++;
            if (st >= KVMAP_STATE_SHARED && cells[i].delta != 0) pending = true;
        }
        uint8_t best = 0;
        for (int s = 1; s < N_STATES; s++) {
            if (count[s] > count[best]) best = (uint8_t)s;
        }
        if (pending && best >= KVMAP_STATE_SHARED) best |= KVMAP_PENDING_BIT;
        out[c] = best;
    }
}

/* The character of a column code (see the legend). */
static char kvmap_char(uint8_t code) {
    const bool pending = (code & KVMAP_PENDING_BIT) != 0;
    const uint8_t st = code & (uint8_t)~KVMAP_PENDING_BIT;
    if (st == KVMAP_STATE_BEYOND) return ' ';
    if (st == KVMAP_STATE_HOLE) return '.';
    if (st == KVMAP_STATE_SHARED) return pending ? '+' : '*';
    const int s = st - KVMAP_STATE_SEQ0;
    if (s < KVMAP_N_LETTERS) return (char)(pending ? 'a' + s : 'A' + s);
    if (pending) return '~';
    if (s < KVMAP_N_LETTERS + KVMAP_N_DIGITS) return (char)('0' + (s - KVMAP_N_LETTERS));
    return '@';
}

static void kvmap_print_legend(tool_kvmap *m, int32_t group) {
    fprintf(m->text,
            "[kv-map] legend: one character per %d cell%s; A-Z = sequence 0-25, 0-9 = sequence "
            "26-35, @ = higher; lowercase (~ for non-letters) = K-shift pending; * = shared by "
            "several sequences (+ pending); . = hole (free cell below cell_max); blank = free "
            "beyond cell_max\n",
            (int)group, group == 1 ? "" : "s");
}

/* Text map of one event. */
static void kvmap_print(tool_kvmap *m, const char *event, const cs_kv_info *info,
                        const uint8_t *cols, int32_t n_cols, int32_t group) {
    if (!m->legend_done) {
        kvmap_print_legend(m, group);
        m->legend_done = true;
    }
    fprintf(m->text, "[kv-map] %s: used %d/%d, holes %d, frag %.2f", event, (int)info->used,
            (int)info->size, (int)info->holes, (double)info->fragmentation);
    if (info->n_pending_shift > 0)
        fprintf(m->text, ", pending shift %d", (int)info->n_pending_shift);
    if (group > 1) fprintf(m->text, " (1 char = %d cells)", (int)group);
    fputc('\n', m->text);
    /* last column that holds something below cell_max */
    int32_t last = -1;
    for (int32_t c = 0; c < n_cols; c++) {
        if ((cols[c] & (uint8_t)~KVMAP_PENDING_BIT) != KVMAP_STATE_BEYOND) last = c;
    }
    const int32_t n_rows = last < 0 ? 1 : last / m->width + 1;
    char line[1024];
    for (int32_t r = 0; r < n_rows; r++) {
        int32_t n = 0;
        for (int32_t c = r * m->width; c < (r + 1) * m->width && c < n_cols; c++) {
            if (n < (int32_t)sizeof(line) - 1) line[n++] = kvmap_char(cols[c]);
        }
        while (n > 0 && line[n - 1] == ' ') n--;
        line[n] = '\0';
        fprintf(m->text, "%7d |%s\n", (int)(r * m->width * group), line);
    }
    fflush(m->text);
}

/* Keep an event for the SVG. Returns false on allocation failure. */
static bool kvmap_keep(tool_kvmap *m, const char *event, const cs_kv_info *info,
                       const cs_kv_cell *cells) {
    if (m->n_events >= KVMAP_MAX_EVENTS) {
        m->n_dropped++;
        return true;
    }
    if (m->n_events == m->events_cap) {
        const int32_t cap = m->events_cap > 0 ? m->events_cap * 2 : 16;
        kvmap_event *p = realloc(m->events, (size_t)cap * sizeof(*p));
        if (p == NULL) return false;
        m->events = p;
        m->events_cap = cap;
    }
    const int32_t size = info->size;
    const int32_t group = size > KVMAP_SVG_COLS ? (size + KVMAP_SVG_COLS - 1) / KVMAP_SVG_COLS : 1;
    const int32_t n_cols = size > 0 ? (size + group - 1) / group : 0;
    kvmap_event *e = &m->events[m->n_events];
    memset(e, 0, sizeof(*e));
    e->cols = malloc(n_cols > 0 ? (size_t)n_cols : 1);
    if (e->cols == NULL) return false;
    snprintf(e->label, sizeof(e->label), "%s", event);
    e->size = size;
    e->used = info->used;
    e->cell_max = info->cell_max;
    e->holes = info->holes;
    e->pending = info->n_pending_shift;
    e->frag = info->fragmentation;
    e->group = group;
    e->n_cols = n_cols;
    kvmap_columns(cells, size, info->cell_max, group, n_cols, e->cols);
    m->n_events++;
    for (int32_t i = 0; i < info->cell_max; i++) {
        const uint8_t st = kvmap_cell_state(&cells[i], i, info->cell_max);
        if (st >= KVMAP_STATE_SEQ0) m->seq_seen |= (uint64_t)1 << (st - KVMAP_STATE_SEQ0);
        if (st == KVMAP_STATE_SHARED) m->shared_seen = true;
        if (st >= KVMAP_STATE_SHARED && cells[i].delta != 0) m->pending_seen = true;
    }
    return true;
}

void tool_kvmap_event(tool_kvmap *m, const cs_context *ctx, const char *event) {
    if (m == NULL || ctx == NULL) return;
    if (event == NULL) event = "event";
    cs_kv_info info;
    if (cs_kv_stats(ctx, &info) != CS_OK) return;
    const int32_t size = cs_kv_view(ctx, NULL, 0);
    if (size <= 0) return;
    if (size > m->cells_cap) {
        cs_kv_cell *p = realloc(m->cells, (size_t)size * sizeof(*p));
        if (p == NULL) {
            tool_error("kv-map: out of memory");
            m->failed = true;
            return;
        }
        m->cells = p;
        m->cells_cap = size;
    }
    cs_kv_view(ctx, m->cells, size);
    info.size = size;
    if (m->text != NULL) {
        const int32_t max_chars = m->width * KVMAP_MAX_ROWS;
        const int32_t group = size > max_chars ? (size + max_chars - 1) / max_chars : 1;
        const int32_t n_cols = (size + group - 1) / group;
        uint8_t *cols = malloc((size_t)n_cols);
        if (cols == NULL) {
            tool_error("kv-map: out of memory");
            m->failed = true;
            return;
        }
        kvmap_columns(m->cells, size, info.cell_max, group, n_cols, cols);
        kvmap_print(m, event, &info, cols, n_cols, group);
        free(cols);
    }
    if (m->svg_path != NULL && !m->failed && !kvmap_keep(m, event, &info, m->cells)) {
        tool_error("kv-map: out of memory; the SVG will not be written");
        m->failed = true;
    }
}

/* ------------------------------------------------------------------ SVG */

/* Colours per sequence (Tableau-like, distinct on white). */
static const uint32_t kvmap_palette[KVMAP_N_PALETTE] = {
    0x4e79a7, 0xf28e2b, 0x59a14f, 0xe15759, 0x76b7b2, 0xedc948,
    0xb07aa1, 0xff9da7, 0x9c755f, 0x17becf, 0x8cd17d, 0xd37295,
};
static const uint32_t kvmap_hole_rgb = 0xd9d9d9;
static const uint32_t kvmap_beyond_rgb = 0xffffff;
static const uint32_t kvmap_shared_rgb = 0x555555;
static const double kvmap_pending_dark = 0.55; /* factor applied to a pending colour */

static uint32_t kvmap_darken(uint32_t rgb) {
    const uint32_t r = (uint32_t)((double)((rgb >> 16) & 0xff) * kvmap_pending_dark);
    const uint32_t g = (uint32_t)((double)((rgb >> 8) & 0xff) * kvmap_pending_dark);
    const uint32_t b = (uint32_t)((double)(rgb & 0xff) * kvmap_pending_dark);
    return (r << 16) | (g << 8) | b;
}

static uint32_t kvmap_rgb(uint8_t code) {
    const bool pending = (code & KVMAP_PENDING_BIT) != 0;
    const uint8_t st = code & (uint8_t)~KVMAP_PENDING_BIT;
    uint32_t rgb;
    if (st == KVMAP_STATE_BEYOND) return kvmap_beyond_rgb;
    if (st == KVMAP_STATE_HOLE) return kvmap_hole_rgb;
    if (st == KVMAP_STATE_SHARED) {
        rgb = kvmap_shared_rgb;
    } else {
        rgb = kvmap_palette[(st - KVMAP_STATE_SEQ0) % KVMAP_N_PALETTE];
    }
    return pending ? kvmap_darken(rgb) : rgb;
}

/* XML-escape s into f. */
static void kvmap_xml_text(FILE *f, const char *s) {
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            /* control characters are not allowed in XML 1.0 */
            fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
            break;
        }
    }
}

enum {
    SVG_LABEL_W = 230,    /* event labels */
    SVG_LABEL_CHARS = 34, /* label characters that fit SVG_LABEL_W at font-size 12 */
    SVG_MAP_W = 800,      /* cell area */
    SVG_STATS_W = 260,    /* used / holes / frag on the right */
    SVG_ROW_H = 18,
    SVG_ROW_GAP = 4,
    SVG_TOP = 48, /* title and cell axis */
    SVG_MARGIN = 10,
    SVG_LEGEND_ROW = 20,
    SVG_LEGEND_PER_ROW = 5,   /* legend entries per row */
    SVG_LEGEND_ENTRY_W = 215, /* one legend entry: swatch and text */
};

/* The legend text of palette colour p: "sequence 3" or "sequences 3, 15,
 * 27". Returns false when no sequence seen uses that colour. */
static bool kvmap_palette_seqs(uint64_t seen, int p, char *buf, size_t size) {
    int n = 0;
    for (int s = p; s < 64; s += KVMAP_N_PALETTE) n += (int)((seen >> s) & 1u);
    if (buf == NULL || size == 0 || n == 0) return n > 0;
    int len = snprintf(buf, size, "%s", n == 1 ? "sequence " : "sequences ");
    bool first = true;
    for (int s = p; s < 64 && len > 0 && (size_t)len < size; s += KVMAP_N_PALETTE) {
        if (((seen >> s) & 1u) == 0) continue;
        const int w = snprintf(buf + len, size - (size_t)len, "%s%d", first ? "" : ", ", s);
        if (w < 0) break;
        len += w;
        first = false;
    }
    return true;
}

static void kvmap_svg_swatch(FILE *f, int x, int y, uint32_t rgb, const char *text) {
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"14\" fill=\"#%06x\" stroke=\"#999\" "
            "stroke-width=\"0.5\"/><text x=\"%d\" y=\"%d\">",
            x, y, (unsigned)rgb, x + 19, y + 11);
    kvmap_xml_text(f, text);
    fputs("</text>\n", f);
}

/* Legend entry k (0-based, row-major) at the legend's top legend_y. */
static void kvmap_svg_legend_entry(FILE *f, int legend_y, int k, uint32_t rgb, const char *text) {
    kvmap_svg_swatch(f, SVG_MARGIN + (k % SVG_LEGEND_PER_ROW) * SVG_LEGEND_ENTRY_W,
                     legend_y + (k / SVG_LEGEND_PER_ROW) * SVG_LEGEND_ROW, rgb, text);
}

/* The number of legend entries: one per palette colour in use (sequences
 * s, s+12, ...), shared and pending when seen, hole and beyond always. */
static int kvmap_svg_legend_count(const tool_kvmap *m) {
    int n_seq_legend = 0;
    for (int p = 0; p < KVMAP_N_PALETTE; p++) {
        if (kvmap_palette_seqs(m->seq_seen, p, NULL, 0)) n_seq_legend++;
    }
    return n_seq_legend + 2 + (m->shared_seen ? 1 : 0) + (m->pending_seen ? 1 : 0);
}

/* The document header, the title and the cell axis (ticks at 0, 1/4, ...,
 * size; none for an empty cache) with the column headings. */
static void kvmap_svg_head(FILE *f, int width, int height, int32_t size) {
    const int x0 = SVG_MARGIN + SVG_LABEL_W;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n",
            width, height, width, height, width, height);
    fprintf(f,
            "<text x=\"%d\" y=\"18\" font-size=\"14\" font-weight=\"bold\">KV cache cells per "
            "event (%d cells; left = cell 0)</text>\n",
            SVG_MARGIN, (int)size);
    for (int k = 0; k <= 4 && size > 0; k++) {
        const int x = x0 + SVG_MAP_W * k / 4;
        const long cell = (long)size * k / 4;
        const char *anchor = k == 0 ? "start" : (k == 4 ? "end" : "middle");
        fprintf(f,
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#666\" "
                "stroke-width=\"1\"/>\n<text x=\"%d\" y=\"%d\" text-anchor=\"%s\" "
                "font-size=\"10\">%ld</text>\n",
                x, SVG_TOP - 6, x, SVG_TOP - 1, x, SVG_TOP - 9, anchor, cell);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"10\" font-weight=\"bold\">event</text>\n",
            SVG_MARGIN, SVG_TOP - 9);
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" font-size=\"10\" font-weight=\"bold\">used / holes / "
            "fragmentation</text>\n",
            x0 + SVG_MAP_W + 12, SVG_TOP - 9);
}

/* One event's row (index ei): a tooltip, the numbered label (cut to
 * SVG_LABEL_CHARS), the cells as one rect per run of equal columns, and
 * the statistics. Output is O(n_cols). */
static void kvmap_svg_event(FILE *f, const kvmap_event *e, int32_t ei) {
    const int x0 = SVG_MARGIN + SVG_LABEL_W;
    const int y = SVG_TOP + ei * (SVG_ROW_H + SVG_ROW_GAP);
    fprintf(f, "<g><title>");
    kvmap_xml_text(f, e->label);
    fprintf(f, ": used %d/%d, holes %d, frag %.2f, pending shift %d</title>\n", (int)e->used,
            (int)e->size, (int)e->holes, (double)e->frag, (int)e->pending);
    fprintf(f, "<text x=\"%d\" y=\"%d\">%d. ", SVG_MARGIN, y + 13, (int)(ei + 1));
    /* the label column fits about SVG_LABEL_CHARS characters */
    char shown[KVMAP_LABEL_MAX];
    snprintf(shown, sizeof(shown), "%s", e->label);
    if (strlen(shown) > SVG_LABEL_CHARS) memcpy(shown + SVG_LABEL_CHARS - 3, "...", 4);
    kvmap_xml_text(f, shown);
    fputs("</text>\n", f);
    /* runs of equal columns -> one rect; x in 1/100 px for exact edges */
    for (int32_t c = 0; c < e->n_cols;) {
        int32_t c1 = c + 1;
        while (c1 < e->n_cols && e->cols[c1] == e->cols[c]) c1++;
        const double xa = x0 + (double)SVG_MAP_W * c / e->n_cols;
        const double xb = x0 + (double)SVG_MAP_W * c1 / e->n_cols;
        fprintf(f, "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" fill=\"#%06x\"/>\n", xa,
                y, xb - xa, SVG_ROW_H, (unsigned)kvmap_rgb(e->cols[c]));
        c = c1;
    }
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\" "
            "stroke-width=\"0.5\"/>\n",
            x0, y, SVG_MAP_W, SVG_ROW_H);
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\">%d/%d, %d, %.2f%s</text>\n</g>\n",
            x0 + SVG_MAP_W + 12, y + 13, (int)e->used, (int)e->size, (int)e->holes, (double)e->frag,
            e->pending > 0 ? ", shift pending" : "");
}

/* The legend at legend_y, in kvmap_svg_legend_count's order. */
static void kvmap_svg_legend(const tool_kvmap *m, FILE *f, int legend_y) {
    int k = 0;
    char text[64];
    for (int p = 0; p < KVMAP_N_PALETTE; p++) {
        if (!kvmap_palette_seqs(m->seq_seen, p, text, sizeof(text))) continue;
        kvmap_svg_legend_entry(f, legend_y, k++, kvmap_palette[p], text);
    }
    if (m->shared_seen)
        kvmap_svg_legend_entry(f, legend_y, k++, kvmap_shared_rgb, "shared by several");
    if (m->pending_seen)
        kvmap_svg_legend_entry(f, legend_y, k++, kvmap_darken(kvmap_palette[0]),
                               "darker: K-shift pending");
    kvmap_svg_legend_entry(f, legend_y, k++, kvmap_hole_rgb, "hole (below cell_max)");
    kvmap_svg_legend_entry(f, legend_y, k, kvmap_beyond_rgb, "free beyond cell_max");
}

/* The whole picture: head, one row per recorded event, a note for dropped
 * ones, then the legend below. */
static void kvmap_svg_write(const tool_kvmap *m, FILE *f) {
    const int n_legend = kvmap_svg_legend_count(m);
    const int legend_rows = (n_legend + SVG_LEGEND_PER_ROW - 1) / SVG_LEGEND_PER_ROW;
    const int rows_h = m->n_events * (SVG_ROW_H + SVG_ROW_GAP);
    const int width = SVG_MARGIN * 2 + SVG_LABEL_W + SVG_MAP_W + SVG_STATS_W;
    const int legend_y = SVG_TOP + rows_h + 10 + (m->n_dropped > 0 ? SVG_LEGEND_ROW : 0);
    const int height = legend_y + legend_rows * SVG_LEGEND_ROW + SVG_MARGIN;
    const int32_t size = m->n_events > 0 ? m->events[0].size : 0;

    kvmap_svg_head(f, width, height, size);
    for (int32_t ei = 0; ei < m->n_events; ei++) kvmap_svg_event(f, &m->events[ei], ei);
    if (m->n_dropped > 0) {
        fprintf(f, "<text x=\"%d\" y=\"%d\">(%d later events not drawn)</text>\n", SVG_MARGIN,
                SVG_TOP + rows_h + 14, (int)m->n_dropped);
    }
    kvmap_svg_legend(m, f, legend_y);
    fputs("</svg>\n", f);
}

int tool_kvmap_finish(tool_kvmap *m) {
    if (m == NULL || m->svg_path == NULL) return 0;
    if (m->failed) {
        tool_error("%s: not written (out of memory while recording)", m->svg_path);
        return 1;
    }
    FILE *f = fopen(m->svg_path, "w");
    if (f == NULL) {
        tool_error("%s: %s", m->svg_path, strerror(errno));
        return 1;
    }
    kvmap_svg_write(m, f);
    const bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        tool_error("%s: write failed", m->svg_path);
        return 1;
    }
    return 0;
}
