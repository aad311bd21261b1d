/*
 * Shared by ignite-init (at boot, from /cfg/net) and ignite-agent (RESTORE
 * of a clone): the guest's network as the host planned it. One format, the
 * `key=value` lines of docs/agent-protocol.md (net, gw, route, dns, search;
 * and mac, notify: only a MAC and a datagram, for a clone whose address,
 * routes and name servers are its snapshot's),
 * and one way to apply it: links up, MTU and MAC (ioctl), addresses and
 * routes replaced over rtnetlink (a clone loses the snapshot's address, it
 * does not get a second one), /etc/resolv.conf, and one UDP datagram to the
 * gateway so that the host side learns the guest's MAC at once.
 */
#ifndef IGNITE_NET_H
#define IGNITE_NET_H

#define NET_NICS 8
#define NET_ROUTES 16

struct net_nic {
    char name[16];
    char mac[18];               /* "" = leave it */
    char cidr[64];              /* "" = no address */
    int mtu;                    /* 0 = leave it */
};

struct net_cfg {
    int n, nroutes, nmacs;
    int dns_given;              /* a dns= line came (even empty): resolv.conf is written */
    struct net_nic nic[NET_NICS];
    char gw[64];
    char route[NET_ROUTES][3][64];      /* ifname, destination/prefix, gateway or "" */
    char dns[512], search[512];
    char mac[NET_NICS][2][18];  /* mac= lines: ifname, MAC (nothing else of the link) */
    char notify[64];            /* notify=: "" = none */
};

/* Warnings: one line each, without the newline. */
typedef void (*net_warn_fn)(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Take one line's key and value; 1 if it was a network key, 0 if not, -1 if
 * it was one but malformed (warned). */
int net_line(struct net_cfg *c, const char *key, const char *value, net_warn_fn warn, void *ctx);
/* Every key=value line of text (changed in place); others than the
 * network's are skipped. */
void net_parse(struct net_cfg *c, char *text, net_warn_fn warn, void *ctx);
/* Apply the interfaces and routes (resolv.conf is apart: its root differs). */
void net_apply(const struct net_cfg *c, net_warn_fn warn, void *ctx);
/* Write resolv.conf as `name` in the folder `etc_fd` (never through a link:
 * one the image keeps, e.g. systemd-resolved's, is left alone, 1). 0 when
 * written; -1 with errno. */
int net_resolv(int etc_fd, const char *name, const char *dns, const char *search);

#endif
