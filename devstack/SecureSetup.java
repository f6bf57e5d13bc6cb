// The devstack's secured listeners (run by devstack/stack with Kafka's jars on the class path):
//
//   java -cp '<kafka lib>/*' SecureSetup.java pem DIR
//       DIR/devstack.p12 (made by keytool; password in $DEVSTACK_STOREPASS) -> DIR/ca.pem and, for
//       every other entry, DIR/<alias>.pem (certificate chain) and DIR/<alias>.key (PKCS#8 key).
//   java -cp '<kafka lib>/*' SecureSetup.java grant BOOTSTRAP DIR ACL_FILE
//       Through BOOTSTRAP (the PLAINTEXT listener, whose principal is a super user): every user of
//       ACL_FILE gets a SCRAM-SHA-512 credential with the password in DIR/<user>.password, and
//       exactly the ACLs ACL_FILE lists for it (ACLs of those principals not listed are deleted).
//
// Java and Kafka's own Admin client, so that the devstack needs nothing but the JDK and the jars.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Key;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureSetup {
    public static void main(String[] args) throws Exception {
        if (args.length == 2 && args[0].equals("pem")) {
            pem(Path.of(args[1]), System.getenv("DEVSTACK_STOREPASS").toCharArray());
        } else if (args.length == 4 && args[0].equals("grant")) {
            grant(args[1], Path.of(args[2]), Path.of(args[3]));
        } else {
            System.err.println("usage: SecureSetup pem DIR | grant BOOTSTRAP DIR ACL_FILE");
            System.exit(2);
        }
    }

    static void pem(Path dir, char[] storepass) throws Exception {
        KeyStore store = KeyStore.getInstance("PKCS12");
        try (var in = Files.newInputStream(dir.resolve("devstack.p12"))) {
            store.load(in, storepass);
        }
        for (String alias : Collections.list(store.aliases())) {
            Certificate[] chain = store.getCertificateChain(alias);
            if (alias.equals("ca")) {
                write(dir.resolve("ca.pem"), block("CERTIFICATE", chain[0].getEncoded()));
                continue;
            }
            StringBuilder certs = new StringBuilder();
            for (Certificate cert : chain) {
                certs.append(block("CERTIFICATE", cert.getEncoded()));
            }
            write(dir.resolve(alias + ".pem"), certs.toString());
            Key key = store.getKey(alias, storepass);
            write(dir.resolve(alias + ".key"), block("PRIVATE KEY", key.getEncoded()));
        }
    }

    static void grant(String bootstrap, Path dir, Path aclFile) throws Exception {
        Set<String> users = new LinkedHashSet<>();
        Set<AclBinding> wanted = new LinkedHashSet<>();
        for (String line : Files.readAllLines(aclFile)) {
            line = line.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            // User:NAME  RESOURCE_TYPE  PATTERN_TYPE  RESOURCE_NAME  OPERATION[,OPERATION...]
            String[] f = line.split("\\s+");
            if (f.length != 5 || !f[0].startsWith("User:")) {
                throw new IllegalArgumentException(aclFile + ": not 'User:NAME TYPE PATTERN NAME OPS': " + line);
            }
            users.add(f[0].substring("User:".length()));
            ResourcePattern pattern = new ResourcePattern(
                ResourceType.fromString(f[1]), f[3], PatternType.fromString(f[2]));
            for (String op : f[4].split(",")) {
                AclOperation operation = AclOperation.fromString(op);
                if (operation == AclOperation.UNKNOWN) {
                    throw new IllegalArgumentException(aclFile + ": unknown operation " + op);
                }
                wanted.add(new AclBinding(pattern,
                    new AccessControlEntry(f[0], "*", operation, AclPermissionType.ALLOW)));
            }
        }
        try (Admin admin = Admin.create(Map.of(
                AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                AdminClientConfig.CLIENT_ID_CONFIG, "devstack-secure-setup"))) {
            List<org.apache.kafka.clients.admin.UserScramCredentialAlteration> credentials = new ArrayList<>();
            for (String user : users) {
                String password = Files.readString(dir.resolve(user + ".password")).strip();
                credentials.add(new UserScramCredentialUpsertion(
                    user, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password));
            }
            admin.alterUserScramCredentials(credentials).all().get(60, TimeUnit.SECONDS);

            Set<String> principals = new HashSet<>();
            for (String user : users) {
                principals.add("User:" + user);
            }
            List<AclBindingFilter> stale = new ArrayList<>();
            Set<AclBinding> present = new HashSet<>();
            for (AclBinding binding : admin.describeAcls(AclBindingFilter.ANY).values().get(60, TimeUnit.SECONDS)) {
                if (!principals.contains(binding.entry().principal())) {
                    continue;
                }
                if (wanted.contains(binding)) {
                    present.add(binding);
                } else {
                    stale.add(binding.toFilter());
                }
            }
            if (!stale.isEmpty()) {
                admin.deleteAcls(stale).all().get(60, TimeUnit.SECONDS);
            }
            List<AclBinding> missing = new ArrayList<>(wanted);
            missing.removeAll(present);
            if (!missing.isEmpty()) {
                admin.createAcls(missing).all().get(60, TimeUnit.SECONDS);
            }
            System.out.printf("users %s: %d ACLs (%d created, %d stale deleted)%n",
                String.join(", ", users), wanted.size(), missing.size(), stale.size());
        }
    }

    static String block(String type, byte[] der) {
        String body = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der);
        return "-----BEGIN " + type + "-----\n" + body + "\n-----END " + type + "-----\n";
    }

    static void write(Path path, String text) throws Exception {
        Files.writeString(path, text);
    }
}
