; <?php exit; ?> DO NOT REMOVE THIS LINE
[General]
force_ssl = 0
assume_secure_protocol = 1
