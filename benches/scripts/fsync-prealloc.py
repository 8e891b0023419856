"""fdatasync of small appends: a file grown by each append vs one preallocated with zeros
and written over (what the journal and the audit log do). Four alternations, 2,000 syncs each.

Usage: python3 benches/scripts/fsync-prealloc.py   (writes /var/tmp/fs_test.bin)
"""
import os, time
def run(prealloc, n=2000, size=1500):
    p='/var/tmp/fs_test.bin'
    if os.path.exists(p): os.remove(p)
    fd=os.open(p, os.O_RDWR|os.O_CREAT, 0o644)
    if prealloc:
        os.write(fd, b'\0'*(n*size+4096)); os.fsync(fd); os.lseek(fd,0,0)
    buf=b'x'*size
    t=time.time(); c0=os.times()
    for i in range(n):
        os.write(fd, buf); os.fdatasync(fd)
    dt=time.time()-t; c1=os.times()
    os.close(fd)
    print(f"prealloc={prealloc}: {n/dt:.0f} syncs/s, cpu/sync {( (c1.user-c0.user)+(c1.system-c0.system))/n*1e6:.0f} us")
for _ in range(4):
    run(False); run(True)
