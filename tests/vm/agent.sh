#!/bin/sh
# Runs inside the test machine (started by vm-harness.service from the run share). The host drops
# numbered scripts into the share; this runs each in turn and writes its output and exit code.
cd /mnt/run || exit 1
echo "$(uname -r)" > agent.ready
n=0
while :; do
    if [ -e "cmd-$n.sh" ]; then
        sh "cmd-$n.sh" > "cmd-$n.out" 2>&1
        echo $? > "cmd-$n.rc.tmp"
        mv "cmd-$n.rc.tmp" "cmd-$n.rc"
        n=$((n + 1))
    else
        sleep 0.1
    fi
done
