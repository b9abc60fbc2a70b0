/* Optional accelerator for the two per-line hot loops; collector/speedups.py loads it, and the
 * pure-Python code it stands in for is the reference (the tests compare both, byte for byte).
 *
 * scan_records: Docker json-file records -> Entry tuples, for the usual record only: one whole
 *   line ending in "\n", key order log, stream, [attrs,] time as dockerd writes it, a UTC time
 *   with 0-9 fraction digits. It stops at the first record that is anything else and lets the
 *   Python parser decide about that one (split lines, bad JSON, odd times, over-long lines).
 * encode_entries: EntryAdapter messages of a Loki push, as lokiproto._stream_parts writes them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *STDOUT_STR, *STDERR_STR;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int buffer_reserve(Buffer *buf, Py_ssize_t more) {
    if (buf->len + more <= buf->cap) return 0;
    Py_ssize_t cap = buf->cap ? buf->cap : 4096;
    while (cap < buf->len + more) cap *= 2;
    char *data = PyMem_Realloc(buf->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

/* ---- json-file records ---- */

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A JSON string's content from *pos (just after its opening quote) to its closing quote, unescaped
 * into buf; *pos ends after the closing quote. 0: done; 1: not a usual string (let Python decide);
 * -1: error set. `high` is set when a byte >= 0x80 was written. */
static int read_string(const unsigned char *p, const unsigned char *end, Py_ssize_t *pos, Buffer *buf, int *high) {
    Py_ssize_t i = *pos;
    for (;;) {
        Py_ssize_t run = i;
        while (i < end - p && p[i] != '"' && p[i] != '\\' && p[i] >= 0x20) {
            if (p[i] >= 0x80) *high = 1;
            i++;
        }
        if (buf != NULL && i > run) {
            if (buffer_reserve(buf, i - run) < 0) return -1;
            memcpy(buf->data + buf->len, p + run, (size_t)(i - run));
            buf->len += i - run;
        }
        if (i >= end - p || p[i] < 0x20) return 1;
        if (p[i] == '"') {
            *pos = i + 1;
            return 0;
        }
        /* a backslash */
        if (i + 1 >= end - p) return 1;
        unsigned char c = p[i + 1], out[3];
        int n = 1;
        switch (c) {
        case '"': out[0] = '"'; break;
        case '\\': out[0] = '\\'; break;
        case '/': out[0] = '/'; break;
        case 'b': out[0] = '\b'; break;
        case 'f': out[0] = '\f'; break;
        case 'n': out[0] = '\n'; break;
        case 'r': out[0] = '\r'; break;
        case 't': out[0] = '\t'; break;
        case 'u': {
            if (i + 6 > end - p) return 1;
            int code = 0;
            for (int k = 2; k < 6; k++) {
                int h = hex_value(p[i + k]);
                if (h < 0) return 1;
                code = code * 16 + h;
            }
            if (code >= 0xD800 && code <= 0xDFFF) return 1; /* surrogates: Python's call */
            if (code < 0x80) {
                out[0] = (unsigned char)code;
            } else if (code < 0x800) {
                out[0] = (unsigned char)(0xC0 | code >> 6);
                out[1] = (unsigned char)(0x80 | (code & 0x3F));
                n = 2;
            } else {
                out[0] = (unsigned char)(0xE0 | code >> 12);
                out[1] = (unsigned char)(0x80 | (code >> 6 & 0x3F));
                out[2] = (unsigned char)(0x80 | (code & 0x3F));
                n = 3;
            }
            if (code >= 0x80) *high = 1;
            i += 4;
            break;
        }
        default:
            return 1;
        }
        if (buf != NULL) {
            if (buffer_reserve(buf, n) < 0) return -1;
            memcpy(buf->data + buf->len, out, (size_t)n);
            buf->len += n;
        }
        i += 2;
    }
}

static int literal(const unsigned char *p, Py_ssize_t size, Py_ssize_t *pos, const char *text) {
    size_t n = strlen(text);
    if (*pos + (Py_ssize_t)n > size || memcmp(p + *pos, text, n) != 0) return 0;
    *pos += (Py_ssize_t)n;
    return 1;
}

/* `"attrs":{...}` of string values, skipped (the registry takes attrs from the inspect). */
static int skip_attrs(const unsigned char *p, const unsigned char *end, Py_ssize_t *pos) {
    Py_ssize_t size = end - p;
    int high = 0;
    if (!literal(p, size, pos, "{")) return 1;
    if (literal(p, size, pos, "}")) return 0;
    for (;;) {
        int status;
        if (!literal(p, size, pos, "\"")) return 1;
        if ((status = read_string(p, end, pos, NULL, &high)) != 0) return status;
        if (!literal(p, size, pos, ":\"")) return 1;
        if ((status = read_string(p, end, pos, NULL, &high)) != 0) return status;
        if (literal(p, size, pos, "}")) return 0;
        if (!literal(p, size, pos, ",")) return 1;
    }
}

static int digits(const unsigned char *p, int n, int *value) {
    int v = 0;
    for (int k = 0; k < n; k++) {
        if (p[k] < '0' || p[k] > '9') return 0;
        v = v * 10 + (p[k] - '0');
    }
    *value = v;
    return 1;
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" -> ns since the epoch; 0 when it is anything else. */
static int parse_time(const unsigned char *t, Py_ssize_t n, int64_t *ns) {
    static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, month, day, hour, minute, second;
    if (n < 20 || t[n - 1] != 'Z' || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':') return 0;
    if (!digits(t, 4, &year) || !digits(t + 5, 2, &month) || !digits(t + 8, 2, &day) || !digits(t + 11, 2, &hour)
        || !digits(t + 14, 2, &minute) || !digits(t + 17, 2, &second))
        return 0;
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > month_days[month - 1] || hour > 23 || minute > 59
        || second > 59)
        return 0;
    if (month == 2 && day == 29 && !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))) return 0;
    int64_t nanos = 0;
    if (n > 20) {
        Py_ssize_t count = n - 21; /* fraction digits between '.' and 'Z' */
        if (t[19] != '.' || count < 1 || count > 9) return 0;
        int value;
        for (Py_ssize_t k = 0; k < 9; k++) {
            if (k < count) {
                if (!digits(t + 20 + k, 1, &value)) return 0;
                nanos = nanos * 10 + value;
            } else {
                nanos *= 10;
            }
        }
    }
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    *ns = seconds * 1000000000 + nanos;
    return 1;
}

/* The arguments both scans take: (data, pos, max_line_bytes, entries list, entry type). On success
 * the caller owns `data` (PyBuffer_Release it). */
static int scan_args(PyObject *args, Py_buffer *data, Py_ssize_t *pos, Py_ssize_t *max_line, PyObject **entries,
                     PyObject **entry_type) {
    if (!PyArg_ParseTuple(args, "y*nnO!O!", data, pos, max_line, &PyList_Type, entries, &PyType_Type, entry_type)) return -1;
    if (!PyType_IsSubtype((PyTypeObject *)*entry_type, &PyTuple_Type)) {
        PyBuffer_Release(data);
        PyErr_SetString(PyExc_TypeError, "entry_type must be a tuple type");
        return -1;
    }
    if (*pos < 0) *pos = 0;
    return 0;
}

/* entry_type(stamp, line, stream, None), taking the references to stamp and line (both released on
 * failure). Only atomic items: it cannot be in a cycle, so the collector need not visit it (CPython
 * untracks such tuples too, later). */
static PyObject *new_entry(PyTypeObject *entry_type, PyObject *stamp, PyObject *line, PyObject *stream) {
    PyObject *entry = (stamp && line) ? entry_type->tp_alloc(entry_type, 4) : NULL;
    if (entry == NULL) {
        Py_XDECREF(stamp);
        Py_XDECREF(line);
        return NULL;
    }
    Py_INCREF(stream);
    Py_INCREF(Py_None);
    PyTuple_SET_ITEM(entry, 0, stamp);
    PyTuple_SET_ITEM(entry, 1, line);
    PyTuple_SET_ITEM(entry, 2, stream);
    PyTuple_SET_ITEM(entry, 3, Py_None);
    PyObject_GC_UnTrack(entry);
    return entry;
}

/* Appends the entry to the list, taking the reference; -1 with an error set if it could not. */
static int append_entry(PyObject *entries, PyObject *entry) {
    int appended = PyList_Append(entries, entry);
    Py_DECREF(entry);
    return appended;
}

/* One usual record from p[0..size) (its newline excluded) -> a new Entry, or NULL: not usual (no
 * error set) or an error (set). */
static PyObject *usual_record(const unsigned char *p, Py_ssize_t size, Py_ssize_t max_line, PyTypeObject *entry_type,
                              Buffer *line) {
    const unsigned char *end = p + size;
    Py_ssize_t pos = 0;
    int high = 0, status;
    line->len = 0;
    if (!literal(p, size, &pos, "{\"log\":\"")) return NULL;
    if ((status = read_string(p, end, &pos, line, &high)) != 0) return NULL;
    PyObject *stream;
    if (literal(p, size, &pos, ",\"stream\":\"stdout\"")) {
        stream = STDOUT_STR;
    } else if (literal(p, size, &pos, ",\"stream\":\"stderr\"")) {
        stream = STDERR_STR;
    } else {
        return NULL;
    }
    if (literal(p, size, &pos, ",\"attrs\":") && skip_attrs(p, end, &pos) != 0) return NULL;
    if (!literal(p, size, &pos, ",\"time\":\"")) return NULL;
    Py_ssize_t time_start = pos;
    while (pos < size && p[pos] != '"') pos++;
    if (pos + 2 != size || p[pos + 1] != '}') return NULL;
    int64_t ts;
    if (!parse_time(p + time_start, pos - time_start, &ts)) return NULL;
    Py_ssize_t length = line->len;
    if (length == 0 || line->data[length - 1] != '\n') return NULL; /* part of a split line, or a final one */
    length--;
    if (length && line->data[length - 1] == '\r') length--;
    if (length > max_line) return NULL;
    PyObject *text;
    if (high) {
        text = PyUnicode_DecodeUTF8(line->data, length, NULL);
        if (text == NULL) {
            PyErr_Clear();
            return NULL;
        }
    } else {
        text = PyUnicode_New(length, 127);
        if (text == NULL) return NULL;
        memcpy(PyUnicode_DATA(text), line->data, (size_t)length);
    }
    return new_entry(entry_type, PyLong_FromLongLong(ts), text, stream);
}

static PyObject *scan_records(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    Py_ssize_t pos, max_line;
    PyObject *entries, *entry_type;
    if (scan_args(args, &data, &pos, &max_line, &entries, &entry_type) < 0) return NULL;
    const unsigned char *base = data.buf;
    Py_ssize_t size = data.len, count = 0;
    Buffer line = {NULL, 0, 0};
    int failed = 0;
    while (pos < size) {
        const unsigned char *newline = memchr(base + pos, '\n', (size_t)(size - pos));
        if (newline == NULL) break;
        Py_ssize_t record_end = newline - base;
        PyObject *entry = usual_record(base + pos, record_end - pos, max_line, (PyTypeObject *)entry_type, &line);
        if (entry == NULL) {
            failed = PyErr_Occurred() != NULL;
            break;
        }
        if (append_entry(entries, entry) < 0) {
            failed = 1;
            break;
        }
        count++;
        pos = record_end + 1;
    }
    PyMem_Free(line.data);
    PyBuffer_Release(&data);
    if (failed) return NULL;
    return Py_BuildValue("nn", pos, count);
}

/* ---- Engine API log stream frames ---- */

/* Plain frames from pos on: header (stream 1 or 2, three zero bytes, big-endian length), then
 * Docker's 30-character timestamp, a space, and a text that ends at its only newline. Each becomes
 * an entry (one \r before the newline dropped, invalid UTF-8 replaced). Stops at the first frame
 * that is anything else, incomplete, or has a text over max_line bytes. */
static PyObject *scan_frames(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer data;
    Py_ssize_t pos, max_line;
    PyObject *entries, *entry_type;
    if (scan_args(args, &data, &pos, &max_line, &entries, &entry_type) < 0) return NULL;
    const unsigned char *base = data.buf;
    Py_ssize_t size = data.len, count = 0;
    int failed = 0;
    while (size - pos >= 8) {
        const unsigned char *h = base + pos;
        if ((h[0] != 1 && h[0] != 2) || h[1] || h[2] || h[3]) break;
        Py_ssize_t length = (Py_ssize_t)((uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7]);
        if (length < 32 || size - pos - 8 < length) break;
        const unsigned char *payload = h + 8;
        Py_ssize_t text_length = length - 32; /* without the timestamp, its space and the newline */
        const unsigned char *text = payload + 31;
        if (payload[30] != ' ' || payload[length - 1] != '\n') break;
        if (text_length > max_line) break; /* over the limit (before its \r is dropped): Python's call */
        if (text_length && memchr(text, '\n', (size_t)text_length) != NULL) break;
        int64_t ts;
        if (!parse_time(payload, 30, &ts)) break;
        Py_ssize_t line_length = text_length;
        if (line_length && text[line_length - 1] == '\r') line_length--;
        PyObject *entry = new_entry((PyTypeObject *)entry_type, PyLong_FromLongLong(ts),
                                    PyUnicode_DecodeUTF8((const char *)text, line_length, "replace"),
                                    h[0] == 1 ? STDOUT_STR : STDERR_STR);
        if (entry == NULL || append_entry(entries, entry) < 0) {
            failed = 1;
            break;
        }
        count++;
        pos += 8 + length;
    }
    PyBuffer_Release(&data);
    if (failed) return NULL;
    return Py_BuildValue("nn", pos, count);
}

/* ---- spool read-back ---- */

static PyObject *as_entries(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *tuples, *entry_type;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &tuples, &PyType_Type, &entry_type)) return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)entry_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "entry_type must be a tuple type");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(tuples);
    PyObject *out = PyList_New(count);
    if (out == NULL) return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = PyList_GET_ITEM(tuples, k);
        if (!PyTuple_Check(item)) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_TypeError, "entries must be tuples");
            return NULL;
        }
        Py_ssize_t size = PyTuple_GET_SIZE(item);
        PyObject *entry = ((PyTypeObject *)entry_type)->tp_alloc((PyTypeObject *)entry_type, size);
        if (entry == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        int atomic = 1;
        for (Py_ssize_t i = 0; i < size; i++) {
            PyObject *value = PyTuple_GET_ITEM(item, i);
            atomic = atomic && (value == Py_None || PyLong_CheckExact(value) || PyUnicode_CheckExact(value));
            Py_INCREF(value);
            PyTuple_SET_ITEM(entry, i, value);
        }
        if (atomic) PyObject_GC_UnTrack(entry); /* cannot be in a cycle: the collector need not visit it */
        PyList_SET_ITEM(out, k, entry);
    }
    return out;
}

/* ---- Loki push protobuf ---- */

static int varint_len(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static char *put_varint(char *out, uint64_t v) {
    while (v >= 0x80) {
        *out++ = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *out++ = (char)v;
    return out;
}

static PyObject *encode_entries(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *entries;
    Py_buffer metadata;
    if (!PyArg_ParseTuple(args, "Oy*", &entries, &metadata)) return NULL;
    PyObject *seq = PySequence_Fast(entries, "entries must be a sequence");
    if (seq == NULL) {
        PyBuffer_Release(&metadata);
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Buffer out = {NULL, 0, 0};
    PyObject *result = NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *entry = items[k];
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2 || !PyLong_Check(PyTuple_GET_ITEM(entry, 0))
            || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_TypeError, "entries must be (int, str, ...) tuples");
            goto done;
        }
        long long ts = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 0));
        if (ts == -1 && PyErr_Occurred()) goto done;
        Py_ssize_t length;
        const char *line = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(entry, 1), &length);
        if (line == NULL) goto done;
        long long seconds = ts / 1000000000, nanos = ts % 1000000000;
        if (nanos < 0) {
            nanos += 1000000000;
            seconds -= 1;
        }
        Py_ssize_t ts_len = (seconds ? 1 + varint_len((uint64_t)seconds) : 0) + (nanos ? 1 + varint_len((uint64_t)nanos) : 0);
        Py_ssize_t body_len = 1 + varint_len((uint64_t)ts_len) + ts_len + (length ? 1 + varint_len((uint64_t)length) + length : 0)
                              + metadata.len;
        if (buffer_reserve(&out, 1 + varint_len((uint64_t)body_len) + body_len) < 0) goto done;
        char *w = out.data + out.len;
        *w++ = 0x12;
        w = put_varint(w, (uint64_t)body_len);
        *w++ = 0x0a;
        w = put_varint(w, (uint64_t)ts_len);
        if (seconds) {
            *w++ = 0x08;
            w = put_varint(w, (uint64_t)seconds);
        }
        if (nanos) {
            *w++ = 0x10;
            w = put_varint(w, (uint64_t)nanos);
        }
        if (length) {
            *w++ = 0x12;
            w = put_varint(w, (uint64_t)length);
            memcpy(w, line, (size_t)length);
            w += length;
        }
        if (metadata.len) {
            memcpy(w, metadata.buf, (size_t)metadata.len);
            w += metadata.len;
        }
        out.len = w - out.data;
    }
    result = PyBytes_FromStringAndSize(out.data ? out.data : "", out.len);
done:
    PyMem_Free(out.data);
    Py_DECREF(seq);
    PyBuffer_Release(&metadata);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_records", scan_records, METH_VARARGS,
     "scan_records(data, pos, max_line_bytes, entries, entry_type) -> (pos, count): usual json-file records from pos on, "
     "appended to entries as entry_type(ts_ns, line, stream, None); stops at the first other record."},
    {"scan_frames", scan_frames, METH_VARARGS,
     "scan_frames(data, pos, max_line_bytes, entries, entry_type) -> (pos, count): plain Engine API log frames from pos on, "
     "appended to entries; stops at the first other frame."},
    {"as_entries", as_entries, METH_VARARGS,
     "as_entries(tuples, entry_type) -> list: each tuple as an entry_type (a tuple subclass), items shared."},
    {"encode_entries", encode_entries, METH_VARARGS,
     "encode_entries(entries, metadata) -> bytes: field 2 (EntryAdapter) of a StreamAdapter for each (ts_ns, line, ...) entry, "
     "each with the same encoded structured metadata."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    STDOUT_STR = PyUnicode_InternFromString("stdout");
    STDERR_STR = PyUnicode_InternFromString("stderr");
    if (STDOUT_STR == NULL || STDERR_STR == NULL) return NULL;
    return PyModule_Create(&module);
}
