/*
 * ignite-init: the guest's network as the host planned it, without forking
 * `ip`: links up and their MTU (ioctl), addresses and the default route
 * (rtnetlink, as `ip addr add` and `ip route add default via` send them), and
 * one ICMP echo to the gateway so that the host side learns the guest's MAC.
 */
#include "init.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int ifreq_call(const char *ifname, unsigned long get, unsigned long set,
                      void (*change)(struct ifreq *, int), int arg)
{
    struct ifreq ifr = {0};
    if (strlen(ifname) >= sizeof ifr.ifr_name) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(ifr.ifr_name, ifname);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    int rc = (get && ioctl(s, get, &ifr) < 0) ? -1 : 0;
    if (rc == 0) {
        change(&ifr, arg);
        rc = ioctl(s, set, &ifr);
    }
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

static void set_up(struct ifreq *ifr, int arg)
{
    (void)arg;
    ifr->ifr_flags |= IFF_UP;
}

static void set_mtu(struct ifreq *ifr, int mtu)
{
    ifr->ifr_mtu = mtu;
}

int link_up(const char *ifname)
{
    return ifreq_call(ifname, SIOCGIFFLAGS, SIOCSIFFLAGS, set_up, 0);
}

int link_mtu(const char *ifname, int mtu)
{
    return ifreq_call(ifname, 0, SIOCSIFMTU, set_mtu, mtu);
}

struct nlreq {
    struct nlmsghdr h;
    union {
        struct ifaddrmsg a;
        struct rtmsg r;
    } u;
    char attrs[64];
};

static void attr(struct nlreq *q, unsigned short type, const void *data, size_t len)
{
    struct rtattr *rta = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(rta), data, len);
    q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* Send one request and wait for the kernel's answer: 0, or -1 with errno. */
static int talk(struct nlreq *q)
{
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0)
        return -1;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    q->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    q->h.nlmsg_seq = 1;
    int rc = -1;
    if (sendto(s, q, q->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) >= 0) {
        char buf[1024];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        struct nlmsghdr *h = (struct nlmsghdr *)buf;
        if (n >= (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr)) && h->nlmsg_type == NLMSG_ERROR) {
            int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            rc = err ? -1 : 0;
            errno = -err;
        } else if (n >= 0) {
            errno = EPROTO;
        }
    }
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

/* "ADDR" or "ADDR/PREFIX" -> family, bytes, prefix length. */
static int parse_addr(const char *text, unsigned char *bytes, int *prefix)
{
    char copy[64];
    snprintf(copy, sizeof copy, "%s", text);
    char *slash = strchr(copy, '/');
    if (slash)
        *slash = '\0';
    int family = strchr(copy, ':') ? AF_INET6 : AF_INET;
    int max = family == AF_INET ? 32 : 128;
    if (inet_pton(family, copy, bytes) != 1)
        return -1;
    char *end;
    long p = slash ? strtol(slash + 1, &end, 10) : max;
    if (slash && (*end || end == slash + 1 || p < 0 || p > max))
        return -1;
    *prefix = (int)p;
    return family;
}

int addr_add(const char *ifname, const char *cidr)
{
    unsigned char bytes[16];
    int prefix;
    int family = parse_addr(cidr, bytes, &prefix);
    unsigned index = if_nametoindex(ifname);
    if (family < 0 || index == 0) {
        if (family < 0)
            errno = EINVAL;
        return -1;
    }
    struct nlreq q = {0};
    q.h.nlmsg_len = NLMSG_LENGTH(sizeof q.u.a);
    q.h.nlmsg_type = RTM_NEWADDR;
    q.h.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    q.u.a.ifa_family = (unsigned char)family;
    q.u.a.ifa_prefixlen = (unsigned char)prefix;
    q.u.a.ifa_index = index;
    size_t len = family == AF_INET ? 4 : 16;
    attr(&q, IFA_LOCAL, bytes, len);
    attr(&q, IFA_ADDRESS, bytes, len);
    return talk(&q);
}

int route_default(const char *gw)
{
    unsigned char bytes[16];
    int prefix;
    int family = parse_addr(gw, bytes, &prefix);
    if (family < 0) {
        errno = EINVAL;
        return -1;
    }
    struct nlreq q = {0};
    q.h.nlmsg_len = NLMSG_LENGTH(sizeof q.u.r);
    q.h.nlmsg_type = RTM_NEWROUTE;
    q.h.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    q.u.r.rtm_family = (unsigned char)family;
    q.u.r.rtm_table = RT_TABLE_MAIN;
    q.u.r.rtm_protocol = RTPROT_BOOT;
    q.u.r.rtm_scope = RT_SCOPE_UNIVERSE;
    q.u.r.rtm_type = RTN_UNICAST;
    attr(&q, RTA_GATEWAY, bytes, family == AF_INET ? 4 : 16);
    return talk(&q);
}

static unsigned short icmp_sum(const unsigned char *p, size_t n)
{
    unsigned long sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (unsigned)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        sum += (unsigned)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return htons((unsigned short)~sum);
}

void ping_once(const char *addr)
{
    unsigned char bytes[16], pkt[16] = {0};
    int prefix;
    int family = parse_addr(addr, bytes, &prefix);
    if (family < 0)
        return;
    int s = socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6);
    if (s < 0)
        return;
    pkt[0] = family == AF_INET ? ICMP_ECHO : 128;       /* (ICMPv6: the kernel sums it) */
    pkt[4] = 0x1e, pkt[5] = 0x17, pkt[7] = 1;           /* id, sequence 1 */
    if (family == AF_INET) {
        unsigned short sum = icmp_sum(pkt, sizeof pkt);
        memcpy(pkt + 2, &sum, 2);
        struct sockaddr_in to = {.sin_family = AF_INET};
        memcpy(&to.sin_addr, bytes, 4);
        if (sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) < 0)
            trace("ping %s: %s", addr, strerror(errno));
    } else {
        struct sockaddr_in6 to = {.sin6_family = AF_INET6};
        memcpy(&to.sin6_addr, bytes, 16);
        if (sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) < 0)
            trace("ping %s: %s", addr, strerror(errno));
    }
    close(s);
}
