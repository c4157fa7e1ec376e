/**
 * url_policy — which URLs and which network addresses the downloader may touch.
 *
 * Three jobs, all done before or at the moment a connection is made:
 *
 * 1. Scheme and syntax: a URL is parsed with libcurl's URL API (curl_url) and only the
 *    schemes http and https pass ("blocked: scheme" for file, ftp, gopher, data, ...).
 * 2. Normalisation for dedupe (url_policy_normalize): the string libcurl produces after
 *    parsing, with the scheme and host lower-cased, the default port (80 for http, 443
 *    for https) dropped, the fragment dropped, user and password dropped, "." and ".."
 *    path segments resolved, an empty path written as "/", and numeric IPv4 hosts in
 *    their dotted-quad form (libcurl turns http://0x7f.1/ into http://127.0.0.1/). The
 *    query string is kept byte for byte (it often selects the image); percent-encoding
 *    is not changed and international host names are not converted to punycode.
 * 3. The address policy: the address a socket is about to connect to is classified
 *    (loopback, private, link-local, CGNAT, multicast, unspecified, reserved, public)
 *    and everything but public is refused. `allow_private_network` opens loopback,
 *    private and CGNAT addresses (a self-hosted image server); link-local addresses (the
 *    cloud metadata endpoint 169.254.169.254 among them), multicast, unspecified and
 *    reserved ones stay refused even then, unless the exact address is on the policy's
 *    allow list. The fetcher applies this to the
 *    resolved socket address of every connection (so DNS answers, numeric tricks like
 *    http://2130706433/ and redirects cannot get around it); the checks on URL strings
 *    here are only an early, cheaper refusal for IP literals.
 *
 * IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) IPv6 addresses
 * are classified by the IPv4 address they embed. All functions are thread-safe; a
 * `struct url_policy` is read-only once set up and may be shared between threads.
 */
#ifndef PM_URL_POLICY_H
#define PM_URL_POLICY_H

#include "bytebuf.h"
#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** The class of a network address. Only ADDR_PUBLIC is allowed by default. */
enum addr_class {
    ADDR_INVALID = 0, /* not an address (unparsable text, unknown family) */
    ADDR_PUBLIC,      /* globally routable unicast */
    ADDR_LOOPBACK,    /* 127.0.0.0/8, ::1 */
    ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
    ADDR_LINK_LOCAL,  /* 169.254/16 (incl. the metadata endpoint), fe80::/10 */
    ADDR_CGNAT,       /* 100.64.0.0/10 shared address space */
    ADDR_UNSPECIFIED, /* 0.0.0.0/8, :: */
    ADDR_MULTICAST,   /* 224.0.0.0/4, ff00::/8 */
    ADDR_RESERVED,    /* 240/4, broadcast, documentation, benchmarking, 192.0.0/24,
                         IPv4-compatible ::a.b.c.d, 2001:db8::/32, 100::/64 */
};

/** The verdict of url_policy_check on a URL string. */
enum url_verdict {
    URL_OK = 0,
    URL_BAD,             /* not a URL libcurl can parse (or longer than URL_POLICY_MAX) */
    URL_BLOCKED_SCHEME,  /* a scheme other than http/https */
    URL_BLOCKED_ADDRESS, /* the host is an IP literal the address policy refuses */
};

/** Longest URL accepted, in bytes. */
#define URL_POLICY_MAX 8192

/** Most addresses on a policy's allow list. */
#define URL_POLICY_ALLOW_MAX 16

/** A binary IPv4 or IPv6 address (IPv4 stored as ::ffff:a.b.c.d). */
struct url_addr {
    uint8_t b[16];
};

/** The address policy. Caller-owned; set up with url_policy_init, no heap. */
struct url_policy {
    int allow_private_network;                   /* allow loopback, private, CGNAT */
    size_t nallow;                               /* entries in allow[] */
    struct url_addr allow[URL_POLICY_ALLOW_MAX]; /* exact addresses allowed anyway */
};

/** What url_policy_check learned about a URL. */
struct url_info {
    int https;      /* 1 for https, 0 for http */
    int port;       /* the port connected to (default filled in) */
    char host[256]; /* lower-cased host, IPv6 without brackets ("::1") */
    int host_is_ip; /* the host is an IP literal */
};

/** Default policy: public addresses only, empty allow list. */
void url_policy_init(struct url_policy *p);

/**
 * Add one exact address (numeric text, IPv4 or IPv6) to the allow list: connections to
 * it are allowed whatever its class. Meant for a known internal mirror, and for tests
 * that need one loopback server reachable while checking that the rest is refused.
 * Returns PM_OK, PM_ERR_USAGE (not a numeric address) or PM_ERR_LIMIT (list full).
 */
int url_policy_allow_address(struct url_policy *p, const char *ip, struct pm_error *err);

/** A short name for an address class ("loopback", "link-local", ...). Never NULL. */
const char *url_policy_class_name(enum addr_class c);

/**
 * Classify a socket address (AF_INET or AF_INET6; `len` is its size in bytes). Returns
 * ADDR_INVALID for other families or a short length.
 */
enum addr_class url_policy_classify_sockaddr(const struct sockaddr *sa, size_t len);

/**
 * Classify a numeric address given as text, parsed the way getaddrinfo(AI_NUMERICHOST)
 * parses it — so the inet_aton forms "2130706433", "0x7f.1" and "0177.0.0.1" are IPv4
 * addresses, as they are to libcurl and the C library. IPv6 may be bracketed and carry a
 * zone ("fe80::1%eth0"). Returns ADDR_INVALID for anything that is not numeric (a host
 * name).
 */
enum addr_class url_policy_classify_ip(const char *text);

/**
 * May a connection to this socket address be made under policy p? Returns 1 when
 * allowed, 0 when refused; *cls (may be NULL) receives the address class.
 */
int url_policy_sockaddr_allowed(const struct url_policy *p, const struct sockaddr *sa, size_t len,
                                enum addr_class *cls);

/** Same as url_policy_sockaddr_allowed for a numeric address given as text. */
int url_policy_ip_allowed(const struct url_policy *p, const char *text, enum addr_class *cls);

/**
 * Check a URL string before any request: parse it, refuse schemes other than http and
 * https, and refuse a host that is an IP literal the address policy does not allow.
 * Host names pass here; their addresses are checked when the socket is opened.
 * `info` (may be NULL) receives the parsed scheme, host and port when the URL parses.
 */
enum url_verdict url_policy_check(const struct url_policy *p, const char *url,
                                  struct url_info *info);

/**
 * Write the normalised form of an http/https URL (see the header comment) into out
 * (replacing its contents). Returns PM_OK, PM_ERR_FORMAT (not a parsable URL, a host
 * holding a control byte once percent-decoded, or a result that would not parse again),
 * PM_ERR_UNSUPPORTED (scheme not http/https), PM_ERR_LIMIT (out's limit) or
 * PM_ERR_NOMEM; err names the URL without its user-info.
 */
int url_policy_normalize(const char *url, struct bytebuf *out, struct pm_error *err);

/**
 * Copy url into out (size n, always NUL-terminated, truncated if needed) with any
 * user-info ("user:password@") removed, for messages and result records. Works on
 * unparsable strings too (it cuts the authority's "...@" by hand). Returns out.
 */
char *url_policy_redact(const char *url, char *out, size_t n);

#endif
