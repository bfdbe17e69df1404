"""The plan's data: resolved forwards and the host ports they claim. No logic beyond properties."""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network


@dataclass(frozen=True)
class Claim:
    """The host side of a forward: what no other forward may take."""

    proto: str
    address: IPv4Address | None  # None: every local address
    start: int
    end: int

    def collides(self, other: "Claim") -> bool:
        return (
            self.proto == other.proto
            and self.start <= other.end
            and other.start <= self.end
            and (self.address is None or other.address is None or self.address == other.address)
        )

    def __str__(self) -> str:
        ports = str(self.start) if self.start == self.end else f"{self.start}-{self.end}"
        return f"{self.proto} {self.address or '*'}:{ports}"


@dataclass(frozen=True)
class Forward:
    """One resolved forward: host ports start..end to guest ports guest_port.. on guest."""

    proto: str
    address: IPv4Address | None
    dev: str | None
    sources: tuple[IPv4Network, ...]
    start: int
    end: int
    guest_port: int
    mac: str
    bridge: str
    guest: IPv4Address | None  # None: no lease yet
    where: str

    @property
    def claim(self) -> Claim:
        return Claim(self.proto, self.address, self.start, self.end)

    @property
    def guest_end(self) -> int:
        return self.guest_port + self.end - self.start


@dataclass(frozen=True)
class Plan:
    name: str
    uuid: str
    forwards: tuple[Forward, ...]

    @property
    def waiting_macs(self) -> tuple[str, ...]:
        return tuple(sorted({f.mac for f in self.forwards if f.guest is None}))

    @property
    def claims(self) -> tuple[Claim, ...]:
        return tuple(f.claim for f in self.forwards)
