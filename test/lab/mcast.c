/* A multicast sender and receiver for the lab's containers (busybox has
 * neither). Neither names an interface: the kernel picks it from the routes,
 * as an application that does not choose would get.
 *   mcast recv GROUP PORT SECONDS   join GROUP, print "joined", then the first
 *                                   datagram as "from IP: TEXT"; exit 2 on timeout
 *   mcast send GROUP PORT TEXT N    send TEXT to GROUP:PORT N times, 100 ms apart
 * Built static by test/lab/mcast.ts and bind-mounted into containers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int die(const char *what) { perror(what); return 1; }

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: mcast recv GROUP PORT SECONDS | mcast send GROUP PORT TEXT N\n"); return 1; }
  struct sockaddr_in group = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3])) };
  if (inet_pton(AF_INET, argv[2], &group.sin_addr) != 1) { fprintf(stderr, "bad group %s\n", argv[2]); return 1; }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) return die("socket");
  if (strcmp(argv[1], "recv") == 0) {
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = group.sin_port, .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(s, (struct sockaddr *)&any, sizeof any) < 0) return die("bind");
    struct ip_mreq m = { .imr_multiaddr = group.sin_addr, .imr_interface.s_addr = htonl(INADDR_ANY) };
    if (setsockopt(s, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) < 0) return die("IP_ADD_MEMBERSHIP");
    struct timeval tv = { .tv_sec = atoi(argv[4]) };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    printf("joined\n");
    fflush(stdout);
    char buf[1500];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (struct sockaddr *)&from, &fl);
    if (n < 0) { printf("timeout\n"); return 2; }
    buf[n] = 0;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    printf("from %s: %s\n", ip, buf);
    return 0;
  }
  if (strcmp(argv[1], "send") == 0) {
    int n = argc > 5 ? atoi(argv[5]) : 1;
    for (int i = 0; i < n; i++) {
      if (sendto(s, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&group, sizeof group) < 0) return die("sendto");
      usleep(100000);
    }
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", argv[1]);
  return 1;
}
