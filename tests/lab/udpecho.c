/*
 * Tiny UDP echo server for the lab guest (built with gcc -static by tests/lab/guest.py).
 *
 * Usage: udpecho TAG PORT [PORT...]
 * One child per port; every datagram is answered with "TAG:PORT:" followed by the
 * payload, so a test sees which guest and which guest port answered.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int serve(const char *tag, int port)
{
    char in[2048];
    char out[2048 + 128];
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    if (fd < 0) {
        perror("udpecho: socket");
        return 1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("udpecho: bind");
        return 1;
    }
    for (;;) {
        struct sockaddr_in peer;
        socklen_t peer_len = sizeof(peer);
        ssize_t n = recvfrom(fd, in, sizeof(in), 0, (struct sockaddr *)&peer, &peer_len);
        int head;

        if (n < 0)
            continue;
        head = snprintf(out, 128, "%s:%d:", tag, port);
        if (head < 0 || head >= 128)
            head = 0;
        memcpy(out + head, in, (size_t)n);
        sendto(fd, out, (size_t)head + (size_t)n, 0, (struct sockaddr *)&peer, peer_len);
    }
}

int main(int argc, char **argv)
{
    int i;

    if (argc < 3) {
        fprintf(stderr, "usage: udpecho TAG PORT [PORT...]\n");
        return 2;
    }
    for (i = 2; i < argc; i++) {
        pid_t pid = fork();

        if (pid == 0)
            _exit(serve(argv[1], atoi(argv[i])));
    }
    while (wait(NULL) > 0)
        ;
    return 0;
}
